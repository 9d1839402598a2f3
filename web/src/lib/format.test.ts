import { describe, expect, it } from 'vitest';
import {
  formatBytes,
  formatCost,
  formatDateTime,
  formatDuration,
  formatInt,
  formatPercent,
  formatRelative,
  formatTime,
  formatTokens,
} from './format';

describe('formatTokens', () => {
  it('shows small counts exactly', () => {
    expect(formatTokens(0)).toBe('0');
    expect(formatTokens(12)).toBe('12');
    expect(formatTokens(999)).toBe('999');
  });
  it('compacts thousands, millions and billions', () => {
    expect(formatTokens(1000)).toBe('1k');
    expect(formatTokens(1234)).toBe('1.23k');
    expect(formatTokens(12_345)).toBe('12.3k');
    expect(formatTokens(123_456)).toBe('123k');
    expect(formatTokens(999_999)).toBe('1000k');
    expect(formatTokens(1_234_567)).toBe('1.23M');
    expect(formatTokens(4_500_000_000)).toBe('4.5B');
  });
  it('marks estimated counts and dashes missing ones', () => {
    expect(formatTokens(196, true)).toBe('≈196');
    expect(formatTokens(null)).toBe('—');
    expect(formatTokens(undefined)).toBe('—');
    expect(formatTokens(NaN)).toBe('—');
  });
});

describe('formatInt', () => {
  it('groups thousands', () => {
    expect(formatInt(0)).toBe('0');
    expect(formatInt(999)).toBe('999');
    expect(formatInt(1000)).toBe('1,000');
    expect(formatInt(1234567)).toBe('1,234,567');
    expect(formatInt(-12345)).toBe('-12,345');
    expect(formatInt(null)).toBe('—');
  });
});

describe('formatCost', () => {
  it('never turns an unknown price into zero', () => {
    expect(formatCost(null)).toBe('—');
    expect(formatCost(undefined)).toBe('—');
  });
  it('shows a real zero as $0', () => {
    expect(formatCost(0)).toBe('$0');
  });
  it('keeps four decimals below a dollar', () => {
    expect(formatCost(0.00187)).toBe('$0.0019');
    expect(formatCost(0.5)).toBe('$0.5000');
    expect(formatCost(0.00004)).toBe('<$0.0001');
  });
  it('uses cents from a dollar and groups large sums', () => {
    expect(formatCost(1)).toBe('$1.00');
    expect(formatCost(12.345)).toBe('$12.35');
    expect(formatCost(123456.7)).toBe('$123,457');
  });
});

describe('formatDuration', () => {
  it('formats sub-millisecond and millisecond values', () => {
    expect(formatDuration(0)).toBe('0ms');
    expect(formatDuration(0.35)).toBe('0.35ms');
    expect(formatDuration(0.5)).toBe('0.5ms');
    expect(formatDuration(1)).toBe('1ms');
    expect(formatDuration(812.4)).toBe('812ms');
  });
  it('formats seconds with only the useful decimals', () => {
    expect(formatDuration(999.6)).toBe('1s');
    expect(formatDuration(1240)).toBe('1.24s');
    expect(formatDuration(1500)).toBe('1.5s');
    expect(formatDuration(12_400)).toBe('12.4s');
    expect(formatDuration(59_940)).toBe('59.9s');
  });
  it('formats minutes, hours and days', () => {
    expect(formatDuration(60_000)).toBe('1m 00s');
    expect(formatDuration(125_000)).toBe('2m 05s');
    expect(formatDuration(3_720_000)).toBe('1h 02m');
    expect(formatDuration(90_000_000)).toBe('1d 01h');
  });
  it('dashes missing values', () => {
    expect(formatDuration(null)).toBe('—');
    expect(formatDuration(Infinity)).toBe('—');
  });
});

describe('formatPercent', () => {
  it('formats ratios', () => {
    expect(formatPercent(0)).toBe('0%');
    expect(formatPercent(0.5)).toBe('50.0%');
    expect(formatPercent(0.1234)).toBe('12.3%');
    expect(formatPercent(0.0004)).toBe('<0.1%');
    expect(formatPercent(1)).toBe('100.0%');
    expect(formatPercent(null)).toBe('—');
  });
});

describe('times', () => {
  const now = new Date(2026, 4, 31, 12, 0, 0);
  it('shows a clock time for today and a date otherwise', () => {
    expect(formatTime(new Date(2026, 4, 31, 10, 30, 5).toISOString(), now)).toBe('10:30:05');
    expect(formatTime(new Date(2026, 4, 30, 9, 5, 0).toISOString(), now)).toBe('May 30 09:05');
    expect(formatTime(new Date(2025, 0, 2, 9, 5, 0).toISOString(), now)).toBe('Jan 2, 2025');
    expect(formatTime('not a date', now)).toBe('—');
    expect(formatTime(null, now)).toBe('—');
  });
  it('gives full timestamps with milliseconds', () => {
    expect(formatDateTime(new Date(2026, 4, 31, 10, 30, 5, 42).toISOString())).toBe('2026-05-31 10:30:05.042');
  });
  it('describes how long ago', () => {
    const t = Date.parse('2026-05-31T10:00:00Z');
    expect(formatRelative('2026-05-31T10:00:00Z', t + 2000)).toBe('just now');
    expect(formatRelative('2026-05-31T10:00:00Z', t + 42_000)).toBe('42s ago');
    expect(formatRelative('2026-05-31T10:00:00Z', t + 5 * 60_000)).toBe('5m ago');
    expect(formatRelative('2026-05-31T10:00:00Z', t + 3 * 3_600_000)).toBe('3h ago');
    expect(formatRelative('2026-05-31T10:00:00Z', t + 72 * 3_600_000)).toBe('3d ago');
  });
});

describe('formatBytes', () => {
  it('scales', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KB');
    expect(formatBytes(3 * 1024 * 1024)).toBe('3 MB');
  });
});
