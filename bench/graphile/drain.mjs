// One round of the Graphile Worker peer in `make bench` (bench/graphile_peer.py): enqueues
// JOBS no-op jobs, then times one worker draining them, and prints {"jobs_per_s": ...}.
// Usage: GRAPHILE_DATABASE_URL=... node drain.mjs JOBS CONCURRENCY batched|unbatched
// The URL comes through the environment so it never shows in a process list.
import { EventEmitter } from "node:events";
import pg from "pg";
import { Logger, run, runMigrations } from "graphile-worker";

const [jobs, concurrency] = process.argv.slice(2, 4).map(Number);
const mode = process.argv[4];
if (!(jobs > 0 && concurrency > 0 && ["batched", "unbatched"].includes(mode))) {
  console.error("usage: node drain.mjs JOBS CONCURRENCY batched|unbatched");
  process.exit(2);
}
const connectionString = process.env.GRAPHILE_DATABASE_URL;

// Every job's handler done and its completion handed to the worker; then the drain waits for
// the completions still being written (unbatched, stop() does not wait for them).
let completed = 0;
let drained;
const allCompleted = new Promise((resolve) => (drained = resolve));
const events = new EventEmitter();
events.on("job:complete", () => {
  completed += 1;
  if (completed === jobs) drained();
});

// Batched as Graphile's performance guide says: a local queue of concurrency + 1, completions
// batched; unbatched is its default (a fetch and a completion per job).
const batching =
  mode === "batched" ? { localQueue: { size: concurrency + 1 }, completeJobBatchDelay: 0 } : {};
const maxPoolSize = Math.max(10, concurrency + 2); // its docs: 10 or concurrentJobs + 2
const preset = { worker: { connectionString, concurrentJobs: concurrency, maxPoolSize, events, ...batching } };
// Its per-job log lines would dominate the timing.
const logger = new Logger(() => () => {});

async function main() {
  await runMigrations({ preset, logger });
  const pool = new pg.Pool({ connectionString, max: maxPoolSize });
  const report = (error) => console.error(`graphile: pool error: ${error.message}`);
  pool.on("error", report);
  pool.on("connect", (client) => client.on("error", report));
  await pool.query(
    `SELECT graphile_worker.add_jobs(array(
       SELECT ('noop', '{}'::json, NULL, NULL, NULL, NULL, NULL, NULL)::graphile_worker.job_spec
       FROM generate_series(1, $1)))`,
    [jobs],
  );
  // The machine's server runs without autovacuum: statistics as a user's server has them.
  await pool.query("VACUUM ANALYZE graphile_worker._private_jobs");
  // Every pooled connection open before the clock starts, as ours are.
  const clients = await Promise.all(Array.from({ length: maxPoolSize }, () => pool.connect()));
  clients.forEach((client) => client.release());

  const started = performance.now();
  const runner = await run({
    preset,
    logger,
    pgPool: pool,
    noHandleSignals: true,
    taskList: { noop: async () => {} },
  });
  await allCompleted;
  while ((await jobsLeft(pool)) > 0) await new Promise((resolve) => setTimeout(resolve, 1));
  const elapsed = (performance.now() - started) / 1000;
  await runner.stop();
  await pool.end();
  console.log(JSON.stringify({ jobs_per_s: jobs / elapsed }));
}

async function jobsLeft(pool) {
  const { rows } = await pool.query("SELECT count(*)::int AS left FROM graphile_worker._private_jobs");
  return rows[0].left;
}

main().catch((error) => {
  console.error(`graphile: ${error.message}`);
  process.exit(1);
});
