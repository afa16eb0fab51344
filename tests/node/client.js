// A Node.js client of the Styx scheduler, generated at run time from the shipped protos
// (`sky api proto DIR`) with @grpc/proto-loader: no Python in between. Usage:
//   node client.js PROTO_DIR ENDPOINT TOKEN_FILE
// Prints one JSON object with what it saw; tests/e2e/test_node_client.py checks it.
"use strict";
const fs = require("fs");
const crypto = require("crypto");
const grpc = require("@grpc/grpc-js");
const loader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const [protoDir, endpoint, tokenFile] = process.argv.slice(2);
const def = loader.loadSync("styx/v1/scheduler.proto", { includeDirs: [protoDir], keepCase: true, longs: String, enums: String, defaults: true });
const styx = grpc.loadPackageDefinition(def).styx.v1;
// The token file ends with a newline; a header value must not.
const token = fs.readFileSync(tokenFile, "utf8").trim();
const KEEPALIVE_MS = 1000;
const client = new styx.Scheduler(endpoint, grpc.credentials.createInsecure(), {
  "grpc.keepalive_time_ms": KEEPALIVE_MS,
  "grpc.keepalive_timeout_ms": 5000,
  "grpc.keepalive_permit_without_calls": 1,
});
const md = () => { const m = new grpc.Metadata(); m.set("authorization", `Bearer ${token}`); return m; };
const call = (method, request) => new Promise((resolve, reject) => {
  client[method](request, md(), { deadline: Date.now() + 30000 }, (err, reply) => (err ? reject(err) : resolve(reply)));
});

// google.rpc.Status from the details trailer, decoded by hand (field numbers of status.proto).
function statusDetails(err) {
  const raw = err.metadata && err.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return null;
  const reader = protobuf.Reader.create(raw);
  const out = { code: 0, message: "", details: [] };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    if (tag >>> 3 === 1) out.code = reader.int32();
    else if (tag >>> 3 === 2) out.message = reader.string();
    else if (tag >>> 3 === 3) {
      const any = protobuf.Reader.create(reader.bytes());
      const detail = { type_url: "", value: "" };
      while (any.pos < any.len) {
        const t = any.uint32();
        if (t >>> 3 === 1) detail.type_url = any.string();
        else if (t >>> 3 === 2) detail.value = Buffer.from(any.bytes()).toString("latin1");
        else any.skipType(t & 7);
      }
      out.details.push(detail);
    } else reader.skipType(tag & 7);
  }
  return out;
}

async function main() {
  const seen = {};
  // 1. A DAG: b runs after a, and takes a few keepalive intervals.
  const dag = {
    request_id: crypto.randomUUID(),
    job: { name: "node-dag", tasks: [
      { name: "a", run: "echo from-a" },
      { name: "b", run: "sleep 4; echo from-b", depends_on: ["a"] },
    ] },
  };
  const submitted = await call("SubmitJob", dag);
  seen.job_id = submitted.job_id;
  seen.repeat_same_job = (await call("SubmitJob", dag)).job_id === submitted.job_id;
  // 2. Watch the job's events until both tasks succeeded, over many keepalive pings.
  const started = Date.now();
  seen.events = await new Promise((resolve, reject) => {
    const events = [];
    const stream = client.WatchEvents({ job_id: submitted.job_id }, md(), { deadline: Date.now() + 60000 });
    stream.on("data", (ev) => {
      events.push(`${ev.type}`);
      if (events.filter((t) => t === "EVENT_TYPE_SUCCEEDED").length === 2) { stream.cancel(); resolve(events); }
    });
    stream.on("error", (err) => (err.code === grpc.status.CANCELLED ? resolve(events) : reject(err)));
  });
  seen.watch_ms = Date.now() - started;
  seen.keepalive_ms = KEEPALIVE_MS;
  // 3. Logs of b.
  const b = submitted.tasks.find((t) => t.spec.name === "b");
  seen.logs = await new Promise((resolve, reject) => {
    const chunks = [];
    const stream = client.StreamLogs({ task_id: b.task_id }, md(), { deadline: Date.now() + 30000 });
    stream.on("data", (c) => chunks.push(Buffer.from(c.data)));
    stream.on("end", () => resolve(Buffer.concat(chunks).toString()));
    stream.on("error", reject);
  });
  // 4. Cancel a long job.
  const long = await call("SubmitJob", { request_id: crypto.randomUUID(), job: { tasks: [{ name: "long", run: "sleep 120" }] } });
  const cancelled = await call("CancelJob", { request_id: crypto.randomUUID(), job_id: long.job_id });
  seen.cancelled_state = cancelled.state;
  // 5. Error details: a NaN cpus, and a request_id reused with another payload.
  try {
    await call("SubmitJob", { request_id: crypto.randomUUID(), job: { tasks: [{ name: "x", run: "true", resources: { cpus: NaN } }] } });
    seen.nan = "accepted";
  } catch (err) {
    seen.nan = { code: err.code, status: statusDetails(err) };
  }
  try {
    await call("SubmitJob", { ...dag, job: { tasks: [{ name: "other", run: "true" }] } });
    seen.reused = "accepted";
  } catch (err) {
    seen.reused = { code: err.code, details: err.details };
  }
  console.log(JSON.stringify(seen));
  client.close();
}

main().catch((err) => { console.error(`node client failed: ${err.code} ${err.details || err.message}`); process.exit(1); });
