// A second real MongoDB driver (the Node.js driver, ci/node-mongodb) doing
// a fixed script against FerretDB on 127.0.0.1:PORT with PLAIN auth
// (PASSWORD), then through the compressing relay on 127.0.0.1:ZPORT with
// zlib: insertMany, find, updateOne, aggregate, deleteOne, an unknown
// command, drop. The driver's command monitoring gives every command and
// reply as it sent and read them, written as relaxed Extended JSON by the
// driver's own bson package: {pid, events: {client: [{request_id,
// command_name, database, command, reply}]}} to OUT.
"use strict";
const fs = require("fs");
const { MongoClient, BSON } = require("mongodb");

const [port, zport, password, out] = process.argv.slice(2);
const ejson = (doc) => JSON.parse(BSON.EJSON.stringify(doc, { relaxed: true }));

async function script(uri, events) {
  const client = new MongoClient(uri, { monitorCommands: true, maxPoolSize: 1 });
  const byId = new Map();
  client.on("commandStarted", (e) => {
    const ev = { request_id: e.requestId, command_name: e.commandName, database: e.databaseName,
                 command: ejson(e.command), reply: null };
    byId.set(e.requestId, ev);
    events.push(ev);
  });
  client.on("commandSucceeded", (e) => { byId.get(e.requestId).reply = ejson(e.reply); });
  client.on("commandFailed", (e) => { byId.get(e.requestId).reply = ejson(e.failure.errorResponse ?? {}); });
  const people = client.db("shop").collection("people");
  await people.insertMany([{ _id: 1, name: "ada", age: 36 }, { _id: 2, name: "grace", age: 45, ratio: 0.25 }]);
  const older = await people.find({ age: { $gt: 40 } }).toArray();
  if (older.length !== 1 || older[0].name !== "grace") throw new Error(`find: ${JSON.stringify(older)}`);
  await people.updateOne({ _id: 1 }, { $set: { age: 37 } });
  const got = await people.aggregate([{ $match: { age: { $lt: 40 } } }, { $project: { _id: 0, name: 1 } }]).toArray();
  if (got.length !== 1 || got[0].name !== "ada") throw new Error(`aggregate: ${JSON.stringify(got)}`);
  await people.deleteOne({ _id: 2 });
  await client.db("shop").command({ nosuchcommand: 1 }).then(
    () => { throw new Error("nosuchcommand did not fail"); },
    (e) => { if (e.code !== 59) throw e; },
  );
  await people.drop();
  await client.close();
}

(async () => {
  const events = { plain: [], zlib: [] };
  const auth = `alice:${encodeURIComponent(password)}@`;
  await script(`mongodb://${auth}127.0.0.1:${port}/?authMechanism=PLAIN&authSource=%24external`, events.plain);
  await script(`mongodb://127.0.0.1:${zport}/?compressors=zlib`, events.zlib);
  fs.writeFileSync(out, JSON.stringify({ pid: process.pid, events }));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
