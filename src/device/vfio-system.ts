// What the VFIO backend needs from the system, as one injectable value: the addon's calls, where
// sysfs and /dev are, and how to load a module. The backend's logic (binding and restoring the
// driver, the order of setup and teardown, who unmaps what) runs in unit tests with VFIO's
// ioctls faked over real files, fds and mappings; the lab's guests are the proof on real VFIO.
import { spawnSync } from 'node:child_process';
import { native, type Native } from '../native.js';

/** The addon calls the VFIO backend makes. */
export type VfioNative = Pick<
  Native,
  | 'open'
  | 'close'
  | 'map'
  | 'unmap'
  | 'read32'
  | 'write32'
  | 'pread'
  | 'pwrite'
  | 'eventfdCreate'
  | 'vfioGetApiVersion'
  | 'vfioCheckExtension'
  | 'vfioGroupGetStatus'
  | 'vfioGroupSetContainer'
  | 'vfioSetIommu'
  | 'vfioGroupGetDeviceFd'
  | 'vfioDeviceGetRegionInfo'
  | 'vfioDeviceGetIrqInfo'
  | 'vfioDeviceSetIrqs'
  | 'vfio'
>;

/** The system under the VFIO backend. */
export interface VfioSystem {
  native: VfioNative;
  /** Where sysfs is mounted (`/sys`). */
  sysfsRoot: string;
  /** Where the device nodes are (`/dev`): `vfio/vfio` and `vfio/<group>` under it. */
  devRoot: string;
  /** Loads a kernel module (best effort: the caller checks for the driver afterwards). */
  modprobe(module: string): void;
}

/** This machine. */
export function systemVfio(sysfsRoot = '/sys'): VfioSystem {
  return { native, sysfsRoot, devRoot: '/dev', modprobe: (module) => void spawnSync('modprobe', [module], { stdio: 'ignore' }) };
}
