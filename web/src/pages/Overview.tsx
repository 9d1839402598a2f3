import { useEffect, useMemo, useState } from 'preact/hooks';
import { api, tokenTotal, type TraceSummary } from '../lib/api';
import { formatCost, formatDuration, formatInt, formatPercent, formatTokens } from '../lib/format';
import { setQuery, useQuery } from '../lib/router';
import { useFetch } from '../lib/hooks';
import { useLiveMessages, useReconnect } from '../lib/live';
import { mergeTrace } from '../lib/filters';
import { bucketFor, fillBuckets, parseBucket, shapeSeries } from '../lib/series';
import { ErrorState, Link, Loading, PageHeader, RANGES, RangeSelect, Stat, rangeSince } from '../components/ui';
import { TraceTable } from '../components/TraceTable';
import { Onboarding } from '../components/Onboarding';
import { TimeChart } from '../components/Chart';

export function Overview() {
  const query = useQuery();
  const range = query.get('range') ?? '24h';
  const r = RANGES.find((x) => x.key === range) ?? RANGES[2];
  const [nonce, setNonce] = useState(0);
  const key = `${range}:${nonce}`;
  const analytics = useFetch((signal) => api.analytics({ since: rangeSince(range), bucket: bucketFor(r.ms) }, signal), key);
  const latest = useFetch((signal) => api.traces({ limit: 8 }, signal), 'latest');
  useReconnect(latest.reload);
  useReconnect(analytics.reload);
  const [traces, setTraces] = useState<TraceSummary[]>([]);
  const [fresh, setFresh] = useState<Set<string>>(new Set());
  useEffect(() => {
    if (latest.data) setTraces(latest.data.traces);
  }, [latest.data]);

  // New traces slide into "latest" at once; the numbers refresh a moment later in one go.
  const [pending, setPending] = useState(0);
  useLiveMessages((m) => {
    if ((m.type !== 'trace.created' && m.type !== 'trace.updated') || !m.trace) return;
    const t = m.trace;
    setTraces((list) => mergeTrace(list, t).slice(0, 8));
    if (m.type === 'trace.created') {
      setFresh((f) => new Set(f).add(t.id));
      setPending((p) => p + 1);
    }
  });
  useEffect(() => {
    if (!pending) return;
    const t = setTimeout(() => {
      setPending(0);
      setNonce((n) => n + 1);
    }, 1500);
    return () => clearTimeout(t);
  }, [pending]);

  const series = useMemo(() => {
    const since = rangeSince(range);
    const pts = fillBuckets(analytics.data?.timeseries ?? [], parseBucket(bucketFor(r.ms)) ?? 0, since ? Date.parse(since) : undefined, Date.now());
    return shapeSeries(pts);
  }, [analytics.data]);
  const totals = analytics.data?.totals;
  const noTracesAtAll = latest.data && latest.data.traces.length === 0 && traces.length === 0;

  const charts = useMemo(
    () => ({
      volume: [
        { label: 'Traces', values: series.traces, color: '--c-accent', format: (v: number | null) => formatInt(v), bars: true },
        { label: 'Errors', values: series.errors, color: '--c-error', format: (v: number | null) => formatInt(v), bars: true },
      ],
      latency: series.percentiles.map((p) => ({
        label: p,
        values: series.latency[p],
        color: p === 'p50' ? '--c-p50' : p === 'p95' ? '--c-p95' : '--c-p99',
        format: (v: number | null) => formatDuration(v),
      })),
    }),
    [series],
  );

  return (
    <div class="page">
      <PageHeader title="Overview" subtitle="Your LLM app at a glance.">
        <RangeSelect value={range} onChange={(v) => setQuery({ range: v === '24h' ? null : v })} />
      </PageHeader>
      {analytics.error && !analytics.data ? (
        <ErrorState error={analytics.error} retry={analytics.reload} what="the overview" />
      ) : !analytics.data && analytics.loading ? (
        <Loading />
      ) : noTracesAtAll ? (
        <Onboarding />
      ) : (
        <>
          <div class="stats" data-testid="overview-stats">
            <Stat label="Traces" value={formatInt(totals?.traces)} hint={`${formatInt(totals?.spans)} spans`} testId="traces" />
            <Stat
              label="Error rate"
              value={formatPercent(totals?.error_rate)}
              hint={`${formatInt(totals?.errors)} failed`}
              tone={(totals?.errors ?? 0) > 0 ? 'error' : undefined}
              testId="error_rate"
            />
            <Stat
              label="Latency p50"
              value={formatDuration(totals?.latency_ms?.p50)}
              hint={`p95 ${formatDuration(totals?.latency_ms?.p95)} · p99 ${formatDuration(totals?.latency_ms?.p99)}`}
              testId="latency"
            />
            <Stat
              label="Tokens"
              value={formatTokens(tokenTotal(totals?.tokens))}
              hint={`${formatTokens(totals?.tokens?.prompt)} in · ${formatTokens(totals?.tokens?.completion)} out`}
              testId="tokens"
            />
            <Stat label="Cost" value={formatCost(totals?.cost_usd)} hint={r.label.toLowerCase()} testId="cost" />
          </div>
          {series.times.length > 0 && (
            <div class="chart-grid">
              <TimeChart id="overview-volume" title="Traces and errors" times={series.times} series={charts.volume} height={180} />
              {charts.latency.length > 0 && (
                <TimeChart id="overview-latency" title="Latency" times={series.times} series={charts.latency} height={180} />
              )}
            </div>
          )}
          <section class="section">
            <div class="section-head">
              <h2>Latest traces</h2>
              <Link href="/traces">All traces →</Link>
            </div>
            {latest.error && !latest.data ? (
              <ErrorState error={latest.error} retry={latest.reload} what="traces" />
            ) : traces.length ? (
              <TraceTable traces={traces} fresh={fresh} compact />
            ) : (
              <Loading />
            )}
          </section>
          {(analytics.data?.by_model.length ?? 0) > 0 && (
            <section class="section">
              <div class="section-head">
                <h2>Models</h2>
                <Link href="/analytics">Analytics →</Link>
              </div>
              <div class="model-bars panel">
                {analytics.data!.by_model.slice(0, 6).map((m) => {
                  const share = totals?.traces ? m.traces / totals.traces : 0;
                  return (
                    <div class="model-bar" key={m.model ?? '(none)'}>
                      <span class="mono model-name">{m.model ?? '(no model)'}</span>
                      <span class="bar-bg">
                        <span class="bar-fg" style={{ width: `${Math.max(2, share * 100)}%` }} />
                      </span>
                      <span class="mono num">{formatInt(m.traces)}</span>
                      <span class="mono num muted">{formatCost(m.cost_usd)}</span>
                    </div>
                  );
                })}
              </div>
            </section>
          )}
        </>
      )}
    </div>
  );
}
