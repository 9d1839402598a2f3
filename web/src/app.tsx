import { Layout } from './components/Layout';
import { EmptyState, Link } from './components/ui';
import { matchRoute, useLocation } from './lib/router';
import { Overview } from './pages/Overview';
import { Traces } from './pages/Traces';
import { TraceInspector } from './pages/TraceInspector';
import { AnalyticsPage } from './pages/Analytics';
import { Failures } from './pages/Failures';
import { LiveLogs } from './pages/LiveLogs';
import { Settings } from './pages/Settings';
import { useEffect } from 'preact/hooks';
import { Fragment } from 'preact';
import { useAuth } from './lib/auth';
import { KeyEntry } from './components/Projects';

const TITLES: Record<string, string> = {
  '/': 'Overview',
  '/traces': 'Traces',
  '/analytics': 'Analytics',
  '/failures': 'Failures',
  '/live-logs': 'Live logs',
  '/settings': 'Settings',
};

export function App() {
  const { path } = useLocation();
  const clean = path.length > 1 ? path.replace(/\/+$/, '') : path;
  const traceMatch = matchRoute('/traces/:id', clean);
  const a = useAuth();

  useEffect(() => {
    const t = traceMatch ? `Trace ${traceMatch.id}` : (TITLES[clean] ?? 'Not found');
    document.title = `${t} · TraceLLM`;
  }, [clean]);

  let page;
  if (traceMatch) page = <TraceInspector id={traceMatch.id} key={traceMatch.id} />;
  else if (clean === '/') page = <Overview />;
  else if (clean === '/traces') page = <Traces />;
  else if (clean === '/analytics') page = <AnalyticsPage />;
  else if (clean === '/failures') page = <Failures />;
  else if (clean === '/live-logs') page = <LiveLogs />;
  else if (clean === '/settings') page = <Settings />;
  else
    page = (
      <div class="page">
        <EmptyState icon="alert" title="Page not found">
          <p>
            Nothing lives at <code>{path}</code>. <Link href="/">Go to the overview</Link>.
          </p>
        </EmptyState>
      </div>
    );

  // A data call answered 401: the key entry takes the page's place (Settings stays reachable).
  if (a.keyRequired && clean !== '/settings') page = <KeyEntry message={a.keyRequired} />;

  return (
    <Layout path={clean} key={traceMatch ? 'trace' : clean}>
      {/* another key: every page loads again with it */}
      <Fragment key={a.epoch}>{page}</Fragment>
    </Layout>
  );
}
