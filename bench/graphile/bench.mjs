// Benchmark comparator: the CREVID work unit run through graphile-worker on Postgres.
//
//   node bench/graphile/bench.mjs --database-url postgres://… --tasks N --concurrency C [--fake-url URL]
//
// Prints one JSON line on stdout; logs go to stderr.
import { EventEmitter, once } from "node:events";
import { parseArgs } from "node:util";
import { performance } from "node:perf_hooks";
import { run, Logger } from "graphile-worker";

const { values: args } = parseArgs({
  options: {
    "database-url": { type: "string" },
    tasks: { type: "string" },
    concurrency: { type: "string" },
    "fake-url": { type: "string", default: "" },
    // Jobs per second, evenly (latency under a steady load); 0 = as fast as possible.
    rate: { type: "string", default: "0" },
  },
});
const tasks = Number(args.tasks);
const concurrency = Number(args.concurrency);
const rate = Number(args.rate);
if (!args["database-url"] || !(tasks > 0) || !(concurrency > 0)) {
  console.error("usage: bench.mjs --database-url URL --tasks N --concurrency C [--fake-url URL]");
  process.exit(2);
}
const fake = args["fake-url"].replace(/\/+$/, "");
const speechUrl = fake ? `${fake}/audio/speech` : null;

// Date.now() is whole milliseconds; anchor the monotonic clock to it for microseconds.
const epochOffsetMs = Date.now() - performance.now();
const nowUs = () => Math.round((epochOffsetMs + performance.now()) * 1000);

// The default console logger writes to stdout, which is reserved for the result line; its
// per-job info lines would also cost time inside the measurement.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`[graphile ${level}] ${message}`);
});

const firstStart = new Map(); // n -> [enqueued_at_us, started_at_us]; a retry keeps the first start
let finished = 0;
let lastFinishMs = 0;
let allDone;
const allDonePromise = new Promise((resolve) => (allDone = resolve));

async function benchJob(payload) {
  const startedAt = nowUs();
  if (!firstStart.has(payload.n)) firstStart.set(payload.n, [payload.enqueued_at_us, startedAt]);
  if (speechUrl) {
    const res = await fetch(speechUrl, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "tts-1", input: `job ${payload.n}`, voice: "alloy", response_format: "wav" }),
    });
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`job ${payload.n}: HTTP ${res.status}`);
  }
  finished += 1;
  lastFinishMs = performance.now();
  if (finished === tasks) allDone();
}

const events = new EventEmitter();
const listening = once(events, "pool:listen:success");
const runner = await run({
  connectionString: args["database-url"],
  concurrency,
  taskList: { bench_job: benchJob },
  logger,
  events,
  noHandleSignals: true,
});
await listening;

const startMs = performance.now();
for (let n = 0; n < tasks; n++) {
  if (rate > 0) {
    const wait = startMs + (n * 1000) / rate - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
  }
  await runner.addJob("bench_job", { n, enqueued_at_us: nowUs() });
}
console.error(`enqueued ${tasks} jobs in ${((performance.now() - startMs) / 1000).toFixed(3)} s`);

await allDonePromise;
await runner.stop();

const seconds = (lastFinishMs - startMs) / 1000;
const latencies = [...firstStart.values()].map(([e, s]) => (s - e) / 1000).sort((a, b) => a - b);
// Nearest-rank percentile, as in the apalis comparator.
const percentile = (p) => latencies[Math.min(Math.max(Math.ceil((p / 100) * latencies.length), 1), latencies.length) - 1];
console.log(
  JSON.stringify({
    queue: "graphile-worker",
    tasks,
    seconds,
    per_second: tasks / seconds,
    latency_ms: { p50: percentile(50), p99: percentile(99) },
  }),
);
