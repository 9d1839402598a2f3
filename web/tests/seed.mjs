// Fill a running server with a realistic mix of traces, for looking at the dashboard by hand:
//   node tests/seed.mjs http://127.0.0.1:8000
import { agentTrace, failingTrace, bigTrace } from './fixtures.mjs';

const base = (process.argv[2] ?? 'http://127.0.0.1:8000').replace(/\/$/, '');
const post = async (docs) => {
  const res = await fetch(base + '/traces', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ traces: docs }) });
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  return res.json();
};

const models = ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'llama-3.1-70b-versatile'];
const questions = [
  ['How do I rotate my API key?', 'Create a new key in Settings, deploy it, then revoke the old one.'],
  ['Why was I charged twice?', 'The second charge is a pending authorization; it drops within 3 days.'],
  ['Explain transformers', 'A transformer is a neural network that relates every token to every other with attention.'],
  ['Summarize the incident report', 'Database failover took 4 minutes; no data was lost.'],
  ['Translate "good morning" to Japanese', 'おはようございます (ohayō gozaimasu).'],
];
const docs = [];
const now = Date.now();
for (let k = 0; k < 60; k++) {
  const [q, a] = questions[k % questions.length];
  const t0 = now - (60 - k) * 23 * 60_000 - Math.floor(Math.random() * 60_000);
  if (k % 9 === 4) docs.push(failingTrace({ t0, model: models[k % models.length] }));
  else
    docs.push(
      agentTrace({
        t0,
        model: models[k % models.length],
        question: q,
        answer: a,
        session_id: `sess-${k % 6}`,
        user_id: ['alice', 'bob', 'carol'][k % 3],
        tags: k % 2 ? ['prod'] : ['staging'],
        name: ['support-agent', 'billing-agent', 'research-agent'][k % 3],
      }),
    );
}
console.log(await post(docs));
console.log(await post([bigTrace(2000, { t0: now - 120_000 })]));
