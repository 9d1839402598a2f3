import { useMemo } from 'preact/hooks';
import { api, tokenTotal } from '../lib/api';
import { formatCost, formatDuration, formatInt, formatPercent, formatTokens } from '../lib/format';
import { setQuery, useQuery } from '../lib/router';
import { useFetch } from '../lib/hooks';
import { bucketFor, fillBuckets, parseBucket, shapeSeries } from '../lib/series';
import { EmptyState, ErrorState, Link, Loading, PageHeader, RANGES, RangeSelect, Stat, rangeSince } from '../components/ui';
import { TimeChart, type ChartSeries } from '../components/Chart';

const BUCKETS = ['1m', '5m', '15m', '1h', '1d'];

export function AnalyticsPage() {
  const query = useQuery();
  const range = query.get('range') ?? '24h';
  const r = RANGES.find((x) => x.key === range) ?? RANGES[2];
  const bucket = query.get('bucket') ?? bucketFor(r.ms);
  const res = useFetch((signal) => api.analytics({ since: rangeSince(range), bucket }, signal), `${range}|${bucket}`);
  const data = res.data;
  const s = useMemo(() => {
    const since = rangeSince(range);
    const pts = fillBuckets(data?.timeseries ?? [], parseBucket(bucket) ?? 0, since ? Date.parse(since) : undefined, Date.now());
    return shapeSeries(pts);
  }, [data]);

  const charts = useMemo(() => {
    const intFmt = (v: number | null) => formatInt(v);
    const volume: ChartSeries[] = [
      { label: 'Traces', values: s.traces, color: '--c-accent', format: intFmt, bars: true },
      { label: 'Errors', values: s.errors, color: '--c-error', format: intFmt, bars: true },
    ];
    const latency: ChartSeries[] = s.percentiles.map((p) => ({
      label: p,
      values: s.latency[p],
      color: p === 'p50' ? '--c-p50' : p === 'p95' ? '--c-p95' : '--c-p99',
      format: (v: number | null) => formatDuration(v),
    }));
    const tokens: ChartSeries[] = [{ label: 'Tokens', values: s.tokens, color: '--c-tokens', format: (v) => formatTokens(v) }];
    const cost: ChartSeries[] = [
      { label: 'Cost', values: s.cost, color: '--c-cost', format: (v) => formatCost(v), axis: (v) => '$' + Number(v.toPrecision(2)) },
    ];
    return { volume, latency, tokens, cost };
  }, [s]);

  const totals = data?.totals;
  const byModel = data?.by_model ?? [];
  return (
    <div class="page">
      <PageHeader title="Analytics" subtitle="Volume, errors, latency, tokens and cost over time, by model.">
        <label class="field field-inline">
          <span class="field-label">Bucket</span>
          <select class="select" value={bucket} onChange={(e) => setQuery({ bucket: (e.target as HTMLSelectElement).value })}>
            {[...new Set([...BUCKETS, bucket])].map((b) => (
              <option key={b} value={b}>
                {b}
              </option>
            ))}
          </select>
        </label>
        <RangeSelect value={range} onChange={(v) => setQuery({ range: v === '24h' ? null : v, bucket: null })} />
      </PageHeader>
      {res.error && !data ? (
        <ErrorState error={res.error} retry={res.reload} what="analytics" />
      ) : !data ? (
        <Loading />
      ) : (
        <>
          <div class="stats" data-testid="analytics-totals">
            <Stat label="Traces" value={formatInt(totals?.traces)} hint={`${formatInt(totals?.spans)} spans`} testId="traces" />
            <Stat
              label="Errors"
              value={formatInt(totals?.errors)}
              hint={`${formatPercent(totals?.error_rate)} error rate`}
              tone={(totals?.errors ?? 0) > 0 ? 'error' : undefined}
              testId="errors"
            />
            <Stat
              label="Latency avg"
              value={formatDuration(totals?.latency_ms?.avg)}
              hint={`p50 ${formatDuration(totals?.latency_ms?.p50)} · p95 ${formatDuration(totals?.latency_ms?.p95)} · p99 ${formatDuration(totals?.latency_ms?.p99)}`}
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
          {s.times.length === 0 || !totals?.traces ? (
            <EmptyState icon="analytics" title="No traces in this time range">
              <p>
                Pick a longer range, or <Link href="/traces">look at the traces</Link> you have.
              </p>
            </EmptyState>
          ) : (
            <div class="chart-grid">
              <TimeChart id="volume" title="Traces and errors" times={s.times} series={charts.volume} />
              {charts.latency.length > 0 ? (
                <TimeChart id="latency" title={`Latency ${s.percentiles.join(' / ')}`} times={s.times} series={charts.latency} />
              ) : (
                <div class="panel chart chart-missing">
                  <div class="chart-title">Latency</div>
                  <p class="muted">The server sent no latency percentiles for this range.</p>
                </div>
              )}
              <TimeChart id="tokens" title="Tokens" times={s.times} series={charts.tokens} />
              <TimeChart id="cost" title="Cost (USD)" times={s.times} series={charts.cost} />
            </div>
          )}
          <section class="section">
            <div class="section-head">
              <h2>By model</h2>
            </div>
            {byModel.length === 0 ? (
              <p class="muted">No model calls in this range.</p>
            ) : (
              <div class="table-wrap panel">
                <table class="table" data-testid="by-model">
                  <thead>
                    <tr>
                      <th>Model</th>
                      <th class="num">Traces</th>
                      <th class="num">Share</th>
                      <th class="num">Tokens</th>
                      <th class="num">Cost</th>
                      <th class="num">Avg</th>
                      <th class="num">p50</th>
                      <th class="num">p95</th>
                      <th class="num">p99</th>
                    </tr>
                  </thead>
                  <tbody>
                    {byModel.map((m) => {
                      const share = totals?.traces ? m.traces / totals.traces : 0;
                      const tok = tokenTotal(m.tokens);
                      return (
                        <tr key={m.model ?? '(none)'} data-model={m.model ?? ''}>
                          <td>
                            {m.model ? (
                              <Link href={'/traces?model=' + encodeURIComponent(m.model)} class="chip mono">
                                {m.model}
                              </Link>
                            ) : (
                              <span class="muted">(no model)</span>
                            )}
                          </td>
                          <td class="num mono" data-col="traces">
                            {formatInt(m.traces)}
                          </td>
                          <td class="num">
                            <span class="share">
                              <span class="bar-bg">
                                <span class="bar-fg" style={{ width: `${share * 100}%` }} />
                              </span>
                              <span class="mono muted">{formatPercent(share)}</span>
                            </span>
                          </td>
                          <td class="num mono" data-col="tokens">
                            {formatTokens(tok)}
                          </td>
                          <td class="num mono" data-col="cost">
                            {formatCost(m.cost_usd)}
                          </td>
                          <td class="num mono">{formatDuration(m.latency_ms?.avg)}</td>
                          <td class="num mono">{formatDuration(m.latency_ms?.p50)}</td>
                          <td class="num mono">{formatDuration(m.latency_ms?.p95)}</td>
                          <td class="num mono">{formatDuration(m.latency_ms?.p99)}</td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              </div>
            )}
          </section>
        </>
      )}
    </div>
  );
}
