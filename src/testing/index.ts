/**
 * The QEMU lab: real guests with ivshmem devices, for tests. Prepare once with
 * {@link prepareLab} (or `ivshmem lab prepare`), then {@link startLab} and {@link Lab.run}.
 *
 * @packageDocumentation
 */
export { prepareLab, findLabImage, defaultCacheDir, type PrepareLabOptions, type LabImage } from './prepare.js';
export { startLab, sweepLeftovers, Lab, type LabGuest, type LabOptions, type LabGuestConfig, type LabDeviceConfig, type LabServerConfig } from './lab.js';
export { describeFailure, qemuArgs, type GuestJob, type GuestResult, type GuestDevice, type BootSpec } from './guest.js';
export { detectAccel, type Accel } from './accel.js';
export { LabError } from './errors.js';
export { guestDevices } from './guest-env.js';
