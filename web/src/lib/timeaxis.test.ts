import { describe, expect, it } from 'vitest';
import { axisTicks, axisTicksRange, barGeometry, niceStep, tickLabel, timeScale } from './timeaxis';

describe('timeScale', () => {
  it('maps absolute times to fractions of the trace', () => {
    const s = timeScale(1000, 3000);
    expect(s.span).toBe(2000);
    expect(s.frac(1000)).toBe(0);
    expect(s.frac(2000)).toBe(0.5);
    expect(s.frac(3000)).toBe(1);
  });
  it('clamps times outside the trace', () => {
    const s = timeScale(1000, 3000);
    expect(s.frac(0)).toBe(0);
    expect(s.frac(9999)).toBe(1);
  });
  it('gives a zero-length trace a usable axis', () => {
    const s = timeScale(5000, 5000);
    expect(s.span).toBe(1);
    expect(s.frac(5000)).toBe(0);
    expect(Number.isFinite(s.frac(5001))).toBe(true);
  });
});

describe('niceStep', () => {
  it('rounds up to 1, 2, 5 x 10^k below a second', () => {
    expect(niceStep(0.3)).toBe(0.5);
    expect(niceStep(1)).toBe(1);
    expect(niceStep(1.5)).toBe(2);
    expect(niceStep(3)).toBe(5);
    expect(niceStep(7)).toBe(10);
    expect(niceStep(180)).toBe(200);
    expect(niceStep(400)).toBe(500);
    expect(niceStep(1000)).toBe(1000);
  });
  it('uses whole seconds, minutes and hours above a second', () => {
    expect(niceStep(1200)).toBe(2000);
    expect(niceStep(12_000)).toBe(15_000);
    expect(niceStep(50_000)).toBe(60_000);
    expect(niceStep(4 * 60_000)).toBe(300_000);
    expect(niceStep(2.5 * 86_400_000)).toBe(3 * 86_400_000);
  });
  it('survives nonsense', () => {
    expect(niceStep(0)).toBe(1);
    expect(niceStep(-5)).toBe(1);
    expect(niceStep(NaN)).toBe(1);
  });
});

describe('axisTicks', () => {
  it('starts at zero, covers the duration and respects the pixel gap', () => {
    const ticks = axisTicks(1240, 900, 90);
    expect(ticks[0].ms).toBe(0);
    expect(ticks[0].label).toBe('0');
    const step = ticks[1].ms - ticks[0].ms;
    expect(step).toBe(200);
    expect((step / 1240) * 900).toBeGreaterThanOrEqual(90);
    expect(ticks[ticks.length - 1].ms).toBeLessThanOrEqual(1240);
    expect(ticks.map((t) => t.label)).toEqual(['0', '200ms', '400ms', '600ms', '800ms', '1s', '1.2s']);
    for (const t of ticks) expect(t.frac).toBeCloseTo(t.ms / 1240, 10);
  });
  it('labels long traces in seconds and minutes', () => {
    const ticks = axisTicks(5 * 60_000, 600, 100);
    expect(ticks.map((t) => t.label)).toEqual(['0', '1m', '2m', '3m', '4m', '5m']);
  });
  it('handles sub-millisecond traces', () => {
    const ticks = axisTicks(0.8, 400, 100);
    expect(ticks.length).toBeGreaterThan(1);
    expect(ticks[1].label).toBe('0.2ms');
  });
  it('always has at least the origin', () => {
    expect(axisTicks(0, 10).length).toBeGreaterThanOrEqual(1);
  });
});

describe('tickLabel', () => {
  it('shows only the precision the step needs', () => {
    expect(tickLabel(1500, 500)).toBe('1.5s');
    expect(tickLabel(2000, 1000)).toBe('2s');
    expect(tickLabel(90_000, 30_000)).toBe('1m 30s');
    expect(tickLabel(3_600_000, 600_000)).toBe('1h');
    expect(tickLabel(5_400_000, 600_000)).toBe('1h 30m');
  });
});

describe('barGeometry', () => {
  const s = timeScale(0, 1000);
  it('places a bar by start and duration', () => {
    expect(barGeometry(s, 250, 750, 0.001)).toEqual({ left: 0.25, width: 0.5 });
  });
  it('keeps tiny spans visible without running past the end', () => {
    const g = barGeometry(s, 1000, 1000, 0.01);
    expect(g.width).toBe(0.01);
    expect(g.left + g.width).toBeLessThanOrEqual(1);
  });
});

describe('axisTicksRange', () => {
  it('labels a zoomed window relative to the trace start', () => {
    const ticks = axisTicksRange(1150, 1650, 500, 100);
    expect(ticks.map((t) => t.label)).toEqual(['1.2s', '1.3s', '1.4s', '1.5s', '1.6s']);
    expect(ticks[0].frac).toBeCloseTo(50 / 500, 10);
    for (const t of ticks) {
      expect(t.frac).toBeGreaterThanOrEqual(0);
      expect(t.frac).toBeLessThanOrEqual(1);
    }
  });
  it('matches axisTicks for a window starting at zero', () => {
    expect(axisTicksRange(0, 1240, 900, 90).map((t) => t.label)).toEqual(axisTicks(1240, 900, 90).map((t) => t.label));
  });
});
