import { accessSync, constants, existsSync, readFileSync } from 'node:fs';

/** How QEMU runs the guest CPU. */
export type Accel = 'kvm' | 'tcg';

/**
 * KVM only where it really works. `/dev/kvm` opening, and even creating a VM, is no proof: on
 * hosts backed by kvm_pvm a guest kernel crawls and then dies on an emulation failure, and QEMU
 * does not fall back to TCG by itself. So: hardware virtualization flags, a writable /dev/kvm,
 * and no kvm_pvm.
 */
export function detectAccel(): Accel {
  try {
    const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
    if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo)) return 'tcg';
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
    if (existsSync('/sys/module/kvm_pvm')) return 'tcg';
    return 'kvm';
  } catch {
    return 'tcg';
  }
}
