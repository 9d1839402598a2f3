// Time-series charts on uPlot (canvas, fast for thousands of points). Colors come from the
// theme's CSS variables; the chart is rebuilt when the theme or data change. Each chart
// carries a visually hidden table of its values for screen readers.
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { useEffect, useRef } from 'preact/hooks';
import { cssVar, useTheme } from '../lib/theme';
import { useWidth } from '../lib/hooks';

export interface ChartSeries {
  label: string;
  values: (number | null)[];
  color: string; // a CSS variable name such as --c-accent
  format: (v: number | null) => string;
  /** shorter labels for the y axis; defaults to `format` */
  axis?: (v: number) => string;
  bars?: boolean;
}

export interface ChartProps {
  title: string;
  times: number[]; // epoch milliseconds
  series: ChartSeries[];
  height?: number;
  id?: string;
}

function withAlpha(color: string, alpha: number): string {
  const c = color.trim();
  if (c.startsWith('#') && (c.length === 7 || c.length === 4)) {
    const hex = c.length === 4 ? c.slice(1).split('').map((x) => x + x).join('') : c.slice(1);
    const r = parseInt(hex.slice(0, 2), 16);
    const g = parseInt(hex.slice(2, 4), 16);
    const b = parseInt(hex.slice(4, 6), 16);
    return `rgba(${r},${g},${b},${alpha})`;
  }
  return c;
}

function timeLabel(ms: number, stepMs: number): string {
  const d = new Date(ms);
  const hh = String(d.getHours()).padStart(2, '0');
  const mm = String(d.getMinutes()).padStart(2, '0');
  if (stepMs >= 86_400_000) return `${d.toLocaleString('en', { month: 'short' })} ${d.getDate()}`;
  return `${hh}:${mm}`;
}

function legendTime(ms: number, stepMs: number): string {
  const d = new Date(ms);
  const day = `${d.toLocaleString('en', { month: 'short' })} ${d.getDate()}`;
  if (stepMs >= 86_400_000) return day;
  return `${day} ${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}`;
}

export function TimeChart({ title, times, series, height = 200, id }: ChartProps) {
  const box = useRef<HTMLDivElement>(null);
  const plotEl = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const width = useWidth(box);
  const { theme } = useTheme();

  useEffect(() => {
    if (!plotEl.current || width === 0) return;
    const axisColor = cssVar('--muted');
    const gridColor = cssVar('--grid');
    const step = times.length > 1 ? times[1] - times[0] : 3_600_000;
    const xs = times.map((t) => t / 1000);
    const opts: uPlot.Options = {
      width: Math.max(200, width),
      height,
      padding: [8, 8, 0, 0],
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      legend: { show: true, live: true },
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, max > 0 ? max * 1.1 : 1] } },
      axes: [
        {
          stroke: axisColor,
          grid: { stroke: gridColor, width: 1 },
          ticks: { stroke: gridColor, width: 1 },
          values: (_u, splits) => splits.map((s) => timeLabel(s * 1000, step)),
          font: '11px system-ui, sans-serif',
        },
        {
          stroke: axisColor,
          grid: { stroke: gridColor, width: 1 },
          ticks: { show: false },
          size: 56,
          values: (_u, splits) => splits.map((v) => (v === 0 ? '0' : (series[0].axis ?? series[0].format)(v))),
          font: '11px system-ui, sans-serif',
        },
      ],
      series: [
        { label: 'Time', value: (_u, v) => (v == null ? '—' : legendTime(v * 1000, step)) },
        ...series.map((s) => {
          const color = cssVar(s.color) || '#888';
          return {
            label: s.label,
            stroke: color,
            width: s.bars ? 0 : 2,
            fill: s.bars ? withAlpha(color, 0.8) : series.length > 1 ? undefined : withAlpha(color, 0.12),
            points: { show: !s.bars && times.length < 40, size: 5 },
            spanGaps: false,
            value: (_u: uPlot, v: number | null) => s.format(v),
            ...(s.bars ? { paths: uPlot.paths.bars!({ size: [0.7, 40], align: 0 }) } : {}),
          } as uPlot.Series;
        }),
      ],
    };
    // When the pointer is not over the chart, the legend shows the latest bucket.
    const showLatest = (u: uPlot) => {
      if (u.cursor.idx == null && xs.length) u.setLegend({ idx: xs.length - 1 });
    };
    opts.hooks = { ready: [showLatest], setCursor: [showLatest] };
    const data = [xs, ...series.map((s) => s.values)] as uPlot.AlignedData;
    plot.current?.destroy();
    plot.current = new uPlot(opts, data, plotEl.current);
    return () => {
      plot.current?.destroy();
      plot.current = null;
    };
  }, [times, series, width, height, theme]);

  return (
    <figure class="chart panel" data-chart={id ?? title}>
      <figcaption class="chart-title">{title}</figcaption>
      <div class="chart-box" ref={box}>
        <div ref={plotEl} />
      </div>
      <table class="sr-only" data-chart-values={id ?? title}>
        <caption>{title}</caption>
        <thead>
          <tr>
            <th>Time</th>
            {series.map((s) => (
              <th key={s.label}>{s.label}</th>
            ))}
          </tr>
        </thead>
        <tbody>
          {times.map((t, i) => (
            <tr key={t}>
              <td>{new Date(t).toISOString()}</td>
              {series.map((s) => (
                <td key={s.label} data-value={s.values[i] ?? ''}>
                  {s.format(s.values[i])}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </figure>
  );
}
