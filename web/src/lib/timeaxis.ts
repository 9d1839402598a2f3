// The shared time axis of the waterfall: a linear scale from trace start to trace end and
// "nice" tick marks (1, 2, 5 x 10^k milliseconds; whole seconds and minutes above that).

export interface TimeScale {
  t0: number;
  t1: number;
  span: number;
  /** position of an absolute time on the axis as a fraction in [0, 1] */
  frac(t: number): number;
}

export function timeScale(t0: number, t1: number): TimeScale {
  // A zero-length trace still needs a usable axis: give it one millisecond.
  const span = t1 > t0 ? t1 - t0 : 1;
  return {
    t0,
    t1: t0 + span,
    span,
    frac(t: number) {
      const f = (t - t0) / span;
      return f < 0 ? 0 : f > 1 ? 1 : f;
    },
  };
}

const SUB_SECOND = [1, 2, 5];
const LONG_STEPS_MS = [
  1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000,
  7_200_000, 10_800_000, 21_600_000, 43_200_000, 86_400_000,
];

/** Smallest nice step that is at least `raw` milliseconds. */
export function niceStep(raw: number): number {
  if (!(raw > 0)) return 1;
  if (raw <= 1000) {
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of SUB_SECOND) if (m * mag >= raw - 1e-9) return m * mag;
    return 10 * mag;
  }
  for (const s of LONG_STEPS_MS) if (s >= raw) return s;
  const days = Math.ceil(raw / 86_400_000);
  return days * 86_400_000;
}

export interface Tick {
  /** milliseconds from the start of the axis */
  ms: number;
  /** fraction of the axis width */
  frac: number;
  label: string;
}

/**
 * Ticks for an axis of `durationMs` drawn `widthPx` wide, at least `minGapPx` apart.
 * Always starts at 0.
 */
export function axisTicks(durationMs: number, widthPx: number, minGapPx = 90): Tick[] {
  const d = durationMs > 0 ? durationMs : 1;
  const count = Math.max(1, Math.floor(widthPx / minGapPx));
  const step = niceStep(d / count);
  const ticks: Tick[] = [];
  for (let ms = 0; ms <= d + step * 1e-9; ms += step) {
    ticks.push({ ms, frac: ms / d, label: tickLabel(ms, step) });
    if (ticks.length > 1000) break;
  }
  return ticks;
}

/** Tick labels carry only the precision the step needs: 0, 250ms, 1.5s, 2m, 1m 30s. */
export function tickLabel(ms: number, step: number): string {
  if (ms === 0) return '0';
  if (step < 1) return trim(ms.toFixed(Math.min(3, Math.ceil(-Math.log10(step))))) + 'ms';
  if (step < 1000 && ms < 1000) return Math.round(ms) + 'ms';
  if (ms < 60_000) {
    const s = ms / 1000;
    const decimals = step >= 1000 ? 0 : Math.min(3, Math.ceil(-Math.log10(step / 1000)));
    return trim(s.toFixed(decimals)) + 's';
  }
  if (ms < 3_600_000) {
    const m = Math.floor(ms / 60_000);
    const s = Math.round((ms % 60_000) / 1000);
    return s ? `${m}m ${s}s` : `${m}m`;
  }
  const h = Math.floor(ms / 3_600_000);
  const m = Math.round((ms % 3_600_000) / 60_000);
  return m ? `${h}h ${m}m` : `${h}h`;
}

function trim(s: string): string {
  return s.includes('.') ? s.replace(/\.?0+$/, '') : s;
}

/**
 * Geometry of one waterfall bar, in fractions of the axis width. Very short spans keep a
 * minimum visible width and are nudged left if they would run past the end.
 */
export function barGeometry(scale: TimeScale, start: number, end: number, minWidthFrac: number) {
  let left = scale.frac(start);
  let width = scale.frac(end) - left;
  if (width < minWidthFrac) width = minWidthFrac;
  if (left + width > 1) left = Math.max(0, 1 - width);
  return { left, width };
}

/**
 * Ticks for a window [fromMs, toMs] of the axis (both measured from the trace start), for a
 * zoomed waterfall: labels stay relative to the trace start, positions to the window.
 */
export function axisTicksRange(fromMs: number, toMs: number, widthPx: number, minGapPx = 90): Tick[] {
  const span = toMs > fromMs ? toMs - fromMs : 1;
  const count = Math.max(1, Math.floor(widthPx / minGapPx));
  const step = niceStep(span / count);
  const ticks: Tick[] = [];
  const first = Math.ceil(fromMs / step - 1e-9) * step;
  for (let ms = first; ms <= toMs + step * 1e-9; ms += step) {
    ticks.push({ ms, frac: (ms - fromMs) / span, label: tickLabel(Math.round(ms / step) * step, step) });
    if (ticks.length > 1000) break;
  }
  return ticks;
}
