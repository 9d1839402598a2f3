import { useState } from 'preact/hooks';
import { CodeBlock } from './ui';
import { Icon } from './icons';

function curlSnippet(origin: string): string {
  const now = Date.now();
  const t0 = new Date(now - 1200).toISOString();
  const t1 = new Date(now).toISOString();
  return `curl -X POST ${origin}/api/traces \\
  -H 'Content-Type: application/json' \\
  -d '{
  "name": "hello-tracellm",
  "spans": [{
    "id": "sp_1", "name": "openai.chat", "kind": "llm", "model": "gpt-4o-mini",
    "start_time": "${t0}", "end_time": "${t1}",
    "input": {"messages": [{"role": "user", "content": "Say hello to TraceLLM"}]},
    "output": {"messages": [{"role": "assistant", "content": "Hello, TraceLLM!"}]},
    "tokens": {"prompt": 12, "completion": 5}
  }]
}'`;
}

function pythonSnippet(origin: string): string {
  return `# pip install ./sdk/python   (from the TraceLLM source tree)
# export TRACELLM_ENDPOINT=${origin}/api
from openai import OpenAI
from tracellm import trace, wrap_openai

client = wrap_openai(OpenAI())

@trace(name="hello-tracellm")
def answer(question: str) -> str:
    reply = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
    )
    return reply.choices[0].message.content

print(answer("Say hello to TraceLLM"))`;
}

const TABS = ['curl', 'Python SDK', 'OpenTelemetry'] as const;

/** What a new user sees before the first trace arrives: how to send one. */
export function Onboarding() {
  const [tab, setTab] = useState<(typeof TABS)[number]>('curl');
  const origin = location.origin;
  return (
    <section class="onboarding panel" data-state="no-traces">
      <div class="onboarding-head">
        <div class="state-icon">
          <Icon name="inbox" size={22} />
        </div>
        <div>
          <h2>No traces yet</h2>
          <p class="muted">
            Send your first trace and it appears here the moment it is stored, no reload needed. Every screen of
            this dashboard fills in from there.
          </p>
        </div>
      </div>
      <div class="tabs" role="tablist">
        {TABS.map((t) => (
          <button
            type="button"
            role="tab"
            aria-selected={tab === t}
            class={'tab' + (tab === t ? ' tab-active' : '')}
            onClick={() => setTab(t)}
            key={t}
          >
            {t}
          </button>
        ))}
      </div>
      {tab === 'curl' && (
        <>
          <p class="muted">Post one trace document to the ingest route:</p>
          <CodeBlock code={curlSnippet(origin)} lang="shell" />
        </>
      )}
      {tab === 'Python SDK' && (
        <>
          <p class="muted">
            Decorate a function with <code>@trace</code> and wrap your OpenAI client; LLM calls, tools, tokens, cost
            and errors are captured:
          </p>
          <CodeBlock code={pythonSnippet(origin)} lang="python" />
        </>
      )}
      {tab === 'OpenTelemetry' && (
        <>
          <p class="muted">Any OTLP/HTTP exporter works; point it at this server:</p>
          <CodeBlock
            code={`export OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=${origin}/api/v1/traces\nexport OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf`}
            lang="shell"
          />
        </>
      )}
    </section>
  );
}
