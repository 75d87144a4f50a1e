// Node.js's own `https` server and client (OpenSSL linked into `node`, memory
// BIOs): the peers of the Node.js TLS test.
//
//   node node_https.js server --port P --cert C --key K --ready FILE
//   node node_https.js client --port P --ca C --sizes 0,1024,... [--host H] [--hold FILE]
//
// The server answers `POST /echo/N` with N bytes made by body(N) after reading
// the whole request body; the client sends, for each size N, a request body
// of N bytes and asks for N bytes back, on one keep-alive connection, and
// checks every answer. --host is the server's address (127.0.0.1; the
// certificate is checked for `localhost`); with --hold the client writes
// FILE.waiting and waits for FILE before its first request, and for
// FILE.exit at the end (the test reads its records while it still runs).
'use strict';
const fs = require('fs');
const https = require('https');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

// Deterministic bytes the test can rebuild: "<tag>:<i mod 10>" pattern.
function body(tag, n) {
  const unit = Buffer.from(tag + '0123456789');
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) out[i] = unit[i % unit.length];
  return out;
}

function server() {
  const srv = https.createServer(
    { cert: fs.readFileSync(arg('cert')), key: fs.readFileSync(arg('key')) },
    (req, res) => {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        const n = Number(req.url.split('/').pop());
        const got = Buffer.concat(chunks);
        if (!got.equals(body('req', got.length))) {
          res.writeHead(400);
          res.end();
          return;
        }
        const out = body('resp', n);
        res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': out.length });
        res.end(out);
      });
    },
  );
  srv.keepAliveTimeout = 30000;
  srv.listen(Number(arg('port')), '127.0.0.1', () => fs.writeFileSync(arg('ready'), 'ready\n'));
}

// Writes FILE.waiting, then waits until FILE exists.
async function waitFor(file) {
  fs.writeFileSync(file + '.waiting', '');
  while (!fs.existsSync(file)) await new Promise((r) => setTimeout(r, 20));
}

async function client() {
  const hold = arg('hold');
  if (hold) await waitFor(hold);
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: fs.readFileSync(arg('ca')) });
  const sizes = arg('sizes', '0').split(',').map(Number);
  for (const n of sizes) {
    const payload = body('req', n);
    const got = await new Promise((resolve, reject) => {
      const req = https.request(
        {
          host: arg('host', '127.0.0.1'),
          servername: 'localhost',
          port: Number(arg('port')),
          method: 'POST',
          path: '/echo/' + n,
          agent,
          headers: { 'Content-Length': payload.length, 'Content-Type': 'application/octet-stream' },
        },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode, data: Buffer.concat(chunks) }));
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
    if (got.status !== 200 || !got.data.equals(body('resp', n))) {
      throw new Error(`size ${n}: status ${got.status}, ${got.data.length} bytes`);
    }
  }
  agent.destroy();
  if (hold) await waitFor(hold + '.exit');
}

const mode = process.argv[2];
if (mode === 'server') server();
else if (mode === 'client') client().catch((e) => { console.error(e); process.exit(1); });
else { console.error('usage: node_https.js server|client ...'); process.exit(2); }
