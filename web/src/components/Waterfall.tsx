// The span waterfall: a collapsible tree on the left and each span's bar on a shared time
// axis on the right, in one virtualized list so a 10,000+ span trace scrolls smoothly (only
// the rows in view exist in the DOM).
import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { Span } from '../lib/api';
import type { SpanTree } from '../lib/tree';
import { axisTicksRange, barGeometry, timeScale } from '../lib/timeaxis';
import { formatDuration } from '../lib/format';
import { useVirtualizer, useWidth } from '../lib/hooks';
import { kindClass } from './ui';

export const ROW_H = 28;
const INDENT = 14;
const MAX_INDENT_LEVELS = 24;

declare global {
  interface Window {
    __tracellmWaterfallPainted?: number;
  }
}

export interface WaterfallProps {
  spans: Span[];
  tree: SpanTree;
  rows: Int32Array;
  collapsed: ReadonlySet<number>;
  selected: number;
  onSelect: (i: number) => void;
  onToggle: (i: number) => void;
  /** row index to bring into view (changes when the keyboard moves the selection) */
  scrollTo: { row: number; n: number } | null;
  /** spans to highlight (find results), indexed like `spans` */
  highlight?: Uint8Array | null;
  /** the time window shown (epoch ms), or null for the whole trace */
  view?: { from: number; to: number } | null;
  onZoom?: (v: { from: number; to: number } | null) => void;
}

export function Waterfall({
  spans,
  tree,
  rows,
  collapsed,
  selected,
  onSelect,
  onToggle,
  scrollTo,
  highlight,
  view,
  onZoom,
}: WaterfallProps) {
  const scrollRef = useRef<HTMLDivElement>(null);
  const outer = useRef<HTMLDivElement>(null);
  const width = useWidth(outer);
  const [nameW, setNameW] = useState(() => {
    const saved = Number(localStorage.getItem('tracellm.wfName'));
    return saved >= 160 ? saved : 320;
  });
  const nameWidth = width ? Math.min(nameW, Math.max(160, width - 240)) : nameW;
  const trackW = Math.max(100, width - nameWidth - 24 - 70);

  const scale = useMemo(() => timeScale(view?.from ?? tree.minStart, view?.to ?? tree.maxEnd), [tree, view]);
  const ticks = useMemo(
    () => axisTicksRange(scale.t0 - tree.minStart, scale.t1 - tree.minStart, trackW, 90),
    [scale, tree, trackW],
  );
  const zoomed = !!view;

  // Drag across the axis to zoom into a time window; double-click it to see the whole trace.
  const axisRef = useRef<HTMLDivElement>(null);
  const [brush, setBrush] = useState<{ a: number; b: number } | null>(null);
  const axisFrac = (clientX: number) => {
    const r = axisRef.current!.getBoundingClientRect();
    return Math.max(0, Math.min(1, (clientX - r.left) / Math.max(1, r.width)));
  };
  const onAxisDown = (e: PointerEvent) => {
    if (e.button !== 0 || !onZoom) return;
    e.preventDefault();
    const a = axisFrac(e.clientX);
    setBrush({ a, b: a });
    const move = (ev: PointerEvent) => setBrush({ a, b: axisFrac(ev.clientX) });
    const up = (ev: PointerEvent) => {
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      setBrush(null);
      const b = axisFrac(ev.clientX);
      const r = axisRef.current!.getBoundingClientRect();
      if (Math.abs(b - a) * r.width < 5) return;
      const lo = Math.min(a, b);
      const hi = Math.max(a, b);
      onZoom({ from: scale.t0 + lo * scale.span, to: scale.t0 + hi * scale.span });
    };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  };
  const minFrac = 2 / trackW;

  const v = useVirtualizer({
    count: rows.length,
    getScrollElement: () => scrollRef.current,
    estimateSize: () => ROW_H,
    overscan: 12,
  });

  useEffect(() => {
    if (scrollTo && scrollTo.row >= 0) v.scrollToIndex(scrollTo.row, { align: 'auto' });
  }, [scrollTo]);

  // Mark the first paint of rows (the benchmark and the tests wait for it).
  const painted = useRef(false);
  const [paintedAttr, setPaintedAttr] = useState(false);
  useLayoutEffect(() => {
    if (painted.current || width === 0 || (rows.length > 0 && v.getVirtualItems().length === 0)) return;
    painted.current = true;
    requestAnimationFrame(() => {
      window.__tracellmWaterfallPainted = performance.now();
      setPaintedAttr(true);
    });
  });

  const startDrag = (e: PointerEvent) => {
    e.preventDefault();
    const x0 = e.clientX;
    const w0 = nameWidth;
    let last = w0;
    const move = (ev: PointerEvent) => {
      last = Math.max(160, Math.min(width - 200, w0 + ev.clientX - x0));
      setNameW(last);
    };
    const up = () => {
      window.removeEventListener('pointermove', move);
      window.removeEventListener('pointerup', up);
      try {
        localStorage.setItem('tracellm.wfName', String(Math.round(last)));
      } catch {
        /* ignore */
      }
    };
    window.addEventListener('pointermove', move);
    window.addEventListener('pointerup', up);
  };

  const items = v.getVirtualItems();
  return (
    <div class="wf" ref={outer} data-painted={paintedAttr ? 'true' : undefined} style={{ '--wf-name': nameWidth + 'px' }}>
      <div class="wf-head">
        <div class="wf-head-name">
          Span
          <span class="wf-splitter" onPointerDown={startDrag as unknown as (e: Event) => void} title="Drag to resize" />
        </div>
        <div
          class={'wf-axis' + (onZoom ? ' zoomable' : '')}
          ref={axisRef}
          onPointerDown={onAxisDown as unknown as (e: Event) => void}
          onDblClick={() => onZoom?.(null)}
          title={onZoom ? (zoomed ? 'Drag to zoom further; double-click for the whole trace' : 'Drag across the axis to zoom') : undefined}
          data-testid="wf-axis"
        >
          {ticks.map((t) => (
            <span class="wf-tick" key={t.ms} style={{ left: `${t.frac * 100}%` }}>
              {t.label}
            </span>
          ))}
          {brush && (
            <span
              class="wf-brush"
              style={{ left: `${Math.min(brush.a, brush.b) * 100}%`, width: `${Math.abs(brush.b - brush.a) * 100}%` }}
            />
          )}
        </div>
      </div>
      <div
        class="wf-scroll"
        ref={scrollRef}
        role="tree"
        aria-label="Spans"
        aria-activedescendant={selected >= 0 ? 'wf-' + selected : undefined}
        tabIndex={0}
      >
        <div class="wf-inner" style={{ height: v.getTotalSize() + 'px' }}>
          <div class="wf-grid" aria-hidden="true">
            {ticks.map((t) => (
              <span key={t.ms} style={{ left: `${t.frac * 100}%` }} />
            ))}
          </div>
          {items.map((it) => {
            const i = rows[it.index];
            const s = spans[i];
            const depth = tree.depth[i];
            const hasKids = tree.childCount[i] > 0;
            const isCollapsed = collapsed.has(i);
            const levels = Math.min(depth, MAX_INDENT_LEVELS);
            const outside = zoomed ? (tree.end[i] < scale.t0 ? -1 : tree.start[i] > scale.t1 ? 1 : 0) : 0;
            const g = barGeometry(scale, tree.start[i], tree.end[i], minFrac);
            const dur = tree.open[i] ? null : tree.end[i] - tree.start[i];
            // Duration label: after the bar, or before it when the bar reaches the right edge,
            // or inside it when the bar fills nearly the whole axis.
            const labelInside = g.left + g.width > 0.82 && g.left < 0.14;
            const labelLeft = !labelInside && g.left + g.width > 0.82;
            const err = tree.isError[i] === 1;
            const retry = tree.retry[i];
            return (
              <div
                key={i}
                id={'wf-' + i}
                class={
                  'wf-row' +
                  (i === selected ? ' selected' : '') +
                  (err ? ' is-error' : '') +
                  (retry ? ' is-retry' : '') +
                  (highlight?.[i] ? ' is-match' : '')
                }
                style={{ transform: `translateY(${it.start}px)` }}
                role="treeitem"
                aria-level={depth + 1}
                aria-selected={i === selected}
                aria-expanded={hasKids ? !isCollapsed : undefined}
                data-span-id={s.id}
                onClick={() => onSelect(i)}
                onDblClick={() => hasKids && onToggle(i)}
              >
                <div class="wf-name" title={s.name}>
                  <span class="wf-indent" style={{ width: levels * INDENT + 'px' }} />
                  {depth > MAX_INDENT_LEVELS && <span class="wf-deep">+{depth - MAX_INDENT_LEVELS}</span>}
                  {hasKids ? (
                    <button
                      type="button"
                      class="wf-toggle"
                      tabIndex={-1}
                      aria-label={isCollapsed ? 'Expand' : 'Collapse'}
                      onClick={(e) => {
                        e.stopPropagation();
                        onToggle(i);
                      }}
                    >
                      <span class={isCollapsed ? 'caret' : 'caret open'} />
                    </button>
                  ) : (
                    <span class="wf-toggle-space" />
                  )}
                  <span class={'kind-dot ' + kindClass(s.kind)} title={s.kind} />
                  <span class="wf-label">{s.name}</span>
                  {hasKids && isCollapsed && <span class="wf-count">{tree.subtreeSize[i] - 1}</span>}
                  {retry > 0 && <span class="badge badge-retry">retry {retry}</span>}
                  {err && <span class="badge badge-error">error</span>}
                  {!err && tree.errorBelow[i] === 1 && isCollapsed && <span class="err-below" title="A descendant failed" />}
                </div>
                <div class="wf-track">
                  {outside !== 0 ? (
                    <span class={'wf-off ' + (outside < 0 ? 'before' : 'after')} title="Outside the zoomed window">
                      {outside < 0 ? '◂' : '▸'}
                    </span>
                  ) : (
                    <div
                      class={'wf-bar ' + kindClass(s.kind) + (err ? ' bar-error' : '') + (tree.open[i] ? ' bar-open' : '')}
                      style={{ left: `${g.left * 100}%`, width: `${g.width * 100}%` }}
                    />
                  )}
                  {outside === 0 && <span
                    class={'wf-dur' + (labelLeft ? ' left' : '') + (labelInside ? ' inside' : '')}
                    style={
                      labelInside
                        ? { right: `${(1 - g.left - g.width) * 100}%` }
                        : labelLeft
                          ? { right: `${(1 - g.left) * 100}%` }
                          : { left: `${(g.left + g.width) * 100}%` }
                    }
                  >
                    {dur == null ? 'running' : formatDuration(dur)}
                  </span>}
                </div>
              </div>
            );
          })}
        </div>
      </div>
    </div>
  );
}
