/**
 * The bus: peers on one shared-memory region (a superblock, a peer table, a section per peer
 * with its channel directory), their liveness, and named channels between them.
 *
 * @module
 */
export { attach, type AttachOptions } from './attach.js';
export { Bus } from './bus.js';
export type { BusEvents, BusPeer, IncomingChannel, PeerDownReason } from './types.js';
export type { Geometry, RegionFormat, RegionPlacement } from './region.js';
export { formatRegion, inspectRegion, type ChannelSnapshot, type PeerSnapshot, type RegionSnapshot } from './inspect.js';
export type { RingSnapshot } from '../channel/index.js';
// The region's wire format: every constant of layout.ts is public (SPEC.md, "Region").
export * from './layout.js';
