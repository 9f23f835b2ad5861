/**
 * The QEMU lab: real guests with ivshmem devices, for tests. Prepare once with
 * {@link prepareLab} (or `ivshmem lab prepare`), then {@link startLab} and {@link Lab.run}.
 * Each guest boots Debian's kernel with the host's `/` as its root (read-only, with a tmpfs on
 * top), so the host's node and your built project run unchanged inside it, as root.
 *
 * Needs `qemu-system-x86` and `busybox-static` (Debian packages), and apt for the first
 * preparation. Under TCG a guest boots and runs a small script in about 10-15 s.
 *
 * @example A test (vitest) with two guests ringing each other
 * ```ts
 * import { startLab, describeFailure, type Lab } from 'ivshmem/testing';
 *
 * let lab: Lab;
 * beforeAll(async () => {
 *   lab = await startLab({
 *     servers: { default: { size: 1 << 20, vectors: 2 } },
 *     guests: [
 *       { name: 'a', devices: [{ kind: 'doorbell' }] },
 *       { name: 'b', devices: [{ kind: 'doorbell' }] },
 *     ],
 *   });
 * }, 600_000);
 * afterAll(() => lab?.close());
 *
 * it('rings', async () => {
 *   const { a, b } = await lab.run({
 *     a: { script: 'test/guest.mjs', args: ['ping'] },
 *     b: { script: 'test/guest.mjs', args: ['pong'] },
 *   });
 *   expect(a.exitCode, describeFailure(a)).toBe(0);
 *   expect(b.exitCode, describeFailure(b)).toBe(0);
 * }, 300_000);
 * ```
 *
 * Two guests may also share a point-to-point virtio-net link (`net: { address: '10.0.0.1/24' }`
 * on each, see {@link LabGuestConfig.net}): QEMU joins the two NICs over a host socket of its own,
 * so guests can compare the shared memory with the network they would otherwise use.
 *
 * In the guest script, {@link guestDevices} gives the device addresses and server IDs, and
 * `openDevice(address, { backend: 'vfio', bind: true })` from `ivshmem` opens a device.
 *
 * @packageDocumentation
 */
export { prepareLab, findLabImage, imageIsCurrent, defaultCacheDir, type PrepareLabOptions, type LabImage } from './prepare.js';
export { sweepLeftovers } from './leftovers.js';
export { startLab, Lab, type LabGuest, type LabOptions, type LabGuestConfig, type LabDeviceConfig, type LabServerConfig, type LabNetConfig } from './lab.js';
export { describeFailure, qemuArgs, type GuestJob, type GuestResult, type GuestDevice, type GuestNet, type BootSpec } from './guest.js';
export { detectNetBackend, type NetBackend } from './net.js';
export { detectAccel, type Accel } from './accel.js';
export { LabError } from './errors.js';
export { guestDevices } from './guest-env.js';
