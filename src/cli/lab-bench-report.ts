// What `ivshmem bench --lab` makes of its boots: percentiles per workload, same-boot ratios,
// medians across boots, the issue's targets, and the table. Pure functions of the guests' data.

/** One round-trip workload as the driving guest measured it. */
export interface RoundTripData {
  /** Round-trip times in microseconds, warm-up excluded. */
  samples: number[];
  /** CPU time (user + system) of the measuring process per round trip, in microseconds. */
  cpuUs?: number;
}

/** One stream workload as the receiving guest measured it. */
export interface StreamData {
  bytes: number;
  /** Megabytes (10^6 B) per second at the receiver, from its first arrival to its last. */
  mbPerS: number;
}

/** What the driving guest of one boot reports. */
export interface BootData {
  rows: Record<string, RoundTripData>;
  streams: Record<string, StreamData>;
  /** Workloads left out, with why. */
  skipped?: Record<string, string>;
  /** CPU profiles of the measuring process, by workload, when asked for: top self times. */
  profiles?: Record<string, ProfileEntry[]>;
}

/** A function's share of a workload's CPU profile samples (self time). */
export interface ProfileEntry {
  fn: string;
  percent: number;
}

/** The round-trip workloads, in table order. */
export const ROWS: ReadonlyArray<{ key: string; label: string }> = [
  { key: 'c-doorbell', label: 'C doorbell ping-pong (VFIO MSI-X eventfd, one word in BAR2)' },
  { key: 'node-doorbell', label: "Node, bare doorbell (ring() + 'interrupt', one word in BAR2)" },
  { key: 'channel-spin', label: 'Node channel, deviceWaitStrategy, default spin' },
  { key: 'channel-spin0', label: 'Node channel, spin 0' },
  { key: 'channel-rtc', label: 'Node channel, run-to-completion (sendSync/receiveSync)' },
  { key: 'bus', label: 'Node bus channel (attach/open/accept)' },
  { key: 'c-tcp', label: 'C TCP over virtio-net' },
  { key: 'node-tcp', label: 'Node TCP over virtio-net' },
];

/** The stream workloads, in table order. */
export const STREAMS: ReadonlyArray<{ key: string; label: string }> = [
  { key: 'channel-4k', label: 'channel, 4 KiB messages' },
  { key: 'channel-64k', label: 'channel, 64 KiB messages' },
  { key: 'tcp-4k', label: 'Node TCP, 4 KiB writes' },
  { key: 'tcp-64k', label: 'Node TCP, 64 KiB writes' },
];

type Stat = 'p50' | 'p99';
/** A ratio of two figures of the same boot. */
export interface RatioSpec {
  key: string;
  label: string;
  /** Round-trip row and percentile, or stream key (`stream:`). */
  over: string;
  under: string;
}

const rtt = (row: string, stat: Stat = 'p50'): string => `${row}.${stat}`;

/** The same-boot ratios the benchmark prints. */
export const RATIOS: readonly RatioSpec[] = [
  { key: 'tcp-over-channel', label: 'Node TCP ÷ channel (default spin), p50', over: rtt('node-tcp'), under: rtt('channel-spin') },
  { key: 'tcp-over-rtc', label: 'Node TCP ÷ run-to-completion channel, p50', over: rtt('node-tcp'), under: rtt('channel-rtc') },
  { key: 'channel-over-c', label: 'channel (default spin) ÷ C doorbell, p50', over: rtt('channel-spin'), under: rtt('c-doorbell') },
  { key: 'rtc-over-c', label: 'run-to-completion ÷ C doorbell, p50', over: rtt('channel-rtc'), under: rtt('c-doorbell') },
  { key: 'rtc-over-c-p99', label: 'run-to-completion ÷ C doorbell, p99', over: rtt('channel-rtc', 'p99'), under: rtt('c-doorbell', 'p99') },
  { key: 'async-over-bare', label: 'async channel (default spin) ÷ bare Node doorbell, p50', over: rtt('channel-spin'), under: rtt('node-doorbell') },
  { key: 'async0-over-bare', label: 'async channel (spin 0) ÷ bare Node doorbell, p50', over: rtt('channel-spin0'), under: rtt('node-doorbell') },
  { key: 'stream-4k', label: 'channel stream ÷ Node TCP stream, 4 KiB', over: 'stream:channel-4k', under: 'stream:tcp-4k' },
  { key: 'stream-64k', label: 'channel stream ÷ Node TCP stream, 64 KiB', over: 'stream:channel-64k', under: 'stream:tcp-64k' },
];

/** The lab targets, on the medians of the same-boot ratios. */
export const TARGETS: ReadonlyArray<{ ratio: string; op: '<=' | '>='; bound: number; label: string }> = [
  { ratio: 'rtc-over-c', op: '<=', bound: 1.3, label: 'run-to-completion RTT p50 ≤ 1.3× C doorbell' },
  { ratio: 'rtc-over-c-p99', op: '<=', bound: 3, label: "run-to-completion RTT p99 ≤ 3× C doorbell's p99" },
  { ratio: 'tcp-over-rtc', op: '>=', bound: 7, label: 'Node TCP RTT ÷ run-to-completion RTT ≥ 7' },
  { ratio: 'async-over-bare', op: '<=', bound: 1.2, label: 'async channel RTT ≤ 1.2× bare Node doorbell' },
  { ratio: 'stream-4k', op: '>=', bound: 20, label: 'channel stream ≥ 20× Node TCP, 4 KiB' },
  { ratio: 'stream-64k', op: '>=', bound: 20, label: 'channel stream ≥ 20× Node TCP, 64 KiB' },
];

/** Nearest-rank percentile of unsorted samples; NaN for none. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

/** Median of the finite values; NaN for none. */
export function median(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (finite.length === 0) return Number.NaN;
  const mid = finite.length >> 1;
  return finite.length % 2 ? finite[mid]! : (finite[mid - 1]! + finite[mid]!) / 2;
}

/** One boot's figures: p50/p99 per row, receiver rate per stream, and the ratios. */
export interface BootSummary {
  rtt: Record<string, { p50: number; p99: number; cpuUs?: number; count: number }>;
  streams: Record<string, number>;
  ratios: Record<string, number>;
  skipped: Record<string, string>;
}

export function summarizeBoot(boot: BootData): BootSummary {
  const rttSummary: BootSummary['rtt'] = {};
  for (const [key, row] of Object.entries(boot.rows)) {
    rttSummary[key] = { p50: percentile(row.samples, 50), p99: percentile(row.samples, 99), count: row.samples.length, ...(row.cpuUs === undefined ? {} : { cpuUs: row.cpuUs }) };
  }
  const streams = Object.fromEntries(Object.entries(boot.streams).map(([key, s]) => [key, s.mbPerS]));
  const figure = (ref: string): number => {
    if (ref.startsWith('stream:')) return streams[ref.slice(7)] ?? Number.NaN;
    const [row, stat] = ref.split('.') as [string, Stat];
    return rttSummary[row]?.[stat] ?? Number.NaN;
  };
  const ratios = Object.fromEntries(RATIOS.map((r) => [r.key, figure(r.over) / figure(r.under)]));
  return { rtt: rttSummary, streams, ratios, skipped: boot.skipped ?? {} };
}

/** Medians across boots of every figure and every same-boot ratio. */
export interface LabBenchSummary {
  boots: BootSummary[];
  median: {
    rtt: Record<string, { p50: number; p99: number; cpuUs: number }>;
    streams: Record<string, number>;
    ratios: Record<string, number>;
  };
  targets: Array<{ label: string; ratio: string; value: number; bound: number; op: '<=' | '>='; met: boolean | null }>;
  /** Profiles by workload, from the first boot that has one (profiling slows what it watches). */
  profiles: Record<string, ProfileEntry[]>;
}

export function summarize(boots: readonly BootData[]): LabBenchSummary {
  const summaries = boots.map(summarizeBoot);
  const rows = new Set(summaries.flatMap((s) => Object.keys(s.rtt)));
  const streams = new Set(summaries.flatMap((s) => Object.keys(s.streams)));
  const med = {
    rtt: Object.fromEntries(
      [...rows].map((row) => [
        row,
        {
          p50: median(summaries.map((s) => s.rtt[row]?.p50 ?? Number.NaN)),
          p99: median(summaries.map((s) => s.rtt[row]?.p99 ?? Number.NaN)),
          cpuUs: median(summaries.map((s) => s.rtt[row]?.cpuUs ?? Number.NaN)),
        },
      ]),
    ),
    streams: Object.fromEntries([...streams].map((key) => [key, median(summaries.map((s) => s.streams[key] ?? Number.NaN))])),
    ratios: Object.fromEntries(RATIOS.map((r) => [r.key, median(summaries.map((s) => s.ratios[r.key] ?? Number.NaN))])),
  };
  const targets = TARGETS.map((t) => {
    const value = med.ratios[t.ratio] ?? Number.NaN;
    const met = Number.isFinite(value) ? (t.op === '<=' ? value <= t.bound : value >= t.bound) : null;
    return { label: t.label, ratio: t.ratio, value, bound: t.bound, op: t.op, met };
  });
  const profiles: Record<string, ProfileEntry[]> = {};
  for (const boot of boots) {
    for (const [row, entries] of Object.entries(boot.profiles ?? {})) profiles[row] ??= entries;
  }
  return { boots: summaries, median: med, targets, profiles };
}

const fmt = (n: number | undefined, digits = 0): string => (n === undefined || !Number.isFinite(n) ? '–' : n.toFixed(digits));

/** The report as text: round trips, streams, ratios (median and per boot), targets. */
export function formatReport(summary: LabBenchSummary, header: string[]): string {
  const lines = [...header, ''];
  const boots = summary.boots.length;
  const perBoot = (get: (b: BootSummary) => number | undefined, digits = 0): string => summary.boots.map((b) => fmt(get(b), digits)).join(' ');
  lines.push(`| round trip, 64 B (µs; median of ${boots} boots) | p50 | p99 | CPU/RTT | p50 per boot |`, '|---|---|---|---|---|');
  for (const { key, label } of ROWS) {
    const m = summary.median.rtt[key];
    const skipped = summary.boots.find((b) => b.skipped[key])?.skipped[key];
    if (!m) {
      if (skipped) lines.push(`| ${label} | not measured: ${skipped} | | | |`);
      continue;
    }
    lines.push(`| ${label} | ${fmt(m.p50)} | ${fmt(m.p99)} | ${fmt(m.cpuUs)} | ${perBoot((b) => b.rtt[key]?.p50)} |`);
  }
  lines.push('', '| stream (MB/s at the receiver) | median | per boot |', '|---|---|---|');
  for (const { key, label } of STREAMS) {
    if (summary.median.streams[key] === undefined) continue;
    lines.push(`| ${label} | ${fmt(summary.median.streams[key], 1)} | ${perBoot((b) => b.streams[key], 1)} |`);
  }
  lines.push('', '| same-boot ratio | median | per boot |', '|---|---|---|');
  for (const r of RATIOS) lines.push(`| ${r.label} | ${fmt(summary.median.ratios[r.key], 2)} | ${perBoot((b) => b.ratios[r.key], 2)} |`);
  lines.push('', '| target (issue 10) | median | met |', '|---|---|---|');
  for (const t of summary.targets) lines.push(`| ${t.label} | ${fmt(t.value, 2)} | ${t.met === null ? 'not measured' : t.met ? 'yes' : 'no'} |`);
  for (const [row, entries] of Object.entries(summary.profiles)) {
    lines.push('', `CPU profile of ${row} in the driving guest (self time, share of samples; the profiler slows the workload):`);
    for (const e of entries) lines.push(`  ${e.percent.toFixed(1).padStart(5)}%  ${e.fn}`);
  }
  return lines.join('\n');
}
