// Formatting of the numbers a user reads all day: tokens, cost, durations, times.
// Missing values render as an em dash, never as a made-up zero.

export const DASH = '—';

function trimZeros(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/** Integer with thousands separators: 12345 -> "12,345". */
export function formatInt(n: number | null | undefined): string {
  if (n == null || !Number.isFinite(n)) return DASH;
  const sign = n < 0 ? '-' : '';
  const digits = String(Math.round(Math.abs(n)));
  let out = '';
  for (let i = 0; i < digits.length; i++) {
    if (i > 0 && (digits.length - i) % 3 === 0) out += ',';
    out += digits[i];
  }
  return sign + out;
}

/** Compact token count: 812, 1.2k, 12.3k, 123k, 1.23M, 4.5B. */
export function formatTokens(n: number | null | undefined, estimated = false): string {
  if (n == null || !Number.isFinite(n)) return DASH;
  const prefix = estimated ? '≈' : '';
  const a = Math.abs(n);
  let s: string;
  if (a < 1000) s = String(Math.round(n));
  else if (a < 1e6) s = compact(n / 1e3) + 'k';
  else if (a < 1e9) s = compact(n / 1e6) + 'M';
  else s = compact(n / 1e9) + 'B';
  return prefix + s;
}

function compact(v: number): string {
  const a = Math.abs(v);
  if (a >= 999.95) return String(Math.round(v));
  if (a >= 100) return String(Math.round(v));
  if (a >= 10) return trimZeros(v.toFixed(1));
  return trimZeros(v.toFixed(2));
}

/**
 * Cost in US dollars. `null` means the model's price is unknown: it shows as a dash and is
 * never rendered as $0.
 */
export function formatCost(usd: number | null | undefined): string {
  if (usd == null || !Number.isFinite(usd)) return DASH;
  if (usd === 0) return '$0';
  const a = Math.abs(usd);
  const sign = usd < 0 ? '-' : '';
  if (a < 0.0001) return sign + '<$0.0001';
  if (a < 1) return sign + '$' + a.toFixed(4);
  if (a < 1000) return sign + '$' + a.toFixed(2);
  return sign + '$' + formatInt(a);
}

/** Duration in milliseconds: 0.35ms, 812ms, 1.24s, 12.4s, 2m 05s, 1h 02m. */
export function formatDuration(ms: number | null | undefined): string {
  if (ms == null || !Number.isFinite(ms)) return DASH;
  if (ms < 0) return '-' + formatDuration(-ms);
  if (ms === 0) return '0ms';
  if (ms < 1) return trimZeros(ms.toFixed(2)) + 'ms';
  if (ms < 999.5) return Math.round(ms) + 'ms';
  const s = ms / 1000;
  if (s < 9.995) return trimZeros(s.toFixed(2)) + 's';
  if (s < 59.95) return trimZeros(s.toFixed(1)) + 's';
  const totalS = Math.round(s);
  if (totalS < 3600) {
    const m = Math.floor(totalS / 60);
    const r = totalS % 60;
    return `${m}m ${String(r).padStart(2, '0')}s`;
  }
  const totalM = Math.round(totalS / 60);
  if (totalM < 24 * 60) {
    const h = Math.floor(totalM / 60);
    return `${h}h ${String(totalM % 60).padStart(2, '0')}m`;
  }
  const totalH = Math.round(totalM / 60);
  return `${Math.floor(totalH / 24)}d ${String(totalH % 24).padStart(2, '0')}h`;
}

/** Ratio 0..1 as a percentage: 0 -> "0%", 0.5 -> "50.0%", 0.0004 -> "<0.1%". */
export function formatPercent(ratio: number | null | undefined): string {
  if (ratio == null || !Number.isFinite(ratio)) return DASH;
  if (ratio === 0) return '0%';
  const p = ratio * 100;
  if (p > 0 && p < 0.1) return '<0.1%';
  return p.toFixed(1) + '%';
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** Local clock time for lists: "10:30:05" today, "May 31 10:30" on other days. */
export function formatTime(iso: string | null | undefined, now: Date = new Date()): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return DASH;
  const sameDay =
    d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  const hms = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  if (sameDay) return hms;
  const md = `${MONTHS[d.getMonth()]} ${d.getDate()}`;
  if (d.getFullYear() === now.getFullYear()) return `${md} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  return `${md}, ${d.getFullYear()}`;
}

/** Full local timestamp with milliseconds, for tooltips and detail panes. */
export function formatDateTime(iso: string | null | undefined): string {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return DASH;
  return (
    `${d.getFullYear()}-${pad2(d.getMonth() + 1)}-${pad2(d.getDate())} ` +
    `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, '0')}`
  );
}

/** "just now", "42s ago", "5m ago", "3h ago", "2d ago". */
export function formatRelative(iso: string | null | undefined, now: number = Date.now()): string {
  if (!iso) return DASH;
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return DASH;
  const s = Math.round((now - t) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${s}s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h}h ago`;
  return `${Math.floor(h / 24)}d ago`;
}

/** Byte sizes for payload hints: 512 B, 1.2 KB, 3.4 MB. */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${trimZeros((n / 1024).toFixed(1))} KB`;
  return `${trimZeros((n / 1024 / 1024).toFixed(1))} MB`;
}
