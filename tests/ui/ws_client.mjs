// Connects to the ticket WebSocket and prints each message it receives as one line, until
// the server closes or the time runs out. usage: node ws_client.mjs URL TOKEN SECONDS [SEND...]
// Each SEND is a file whose text is sent as one message once connected, in order.
import { readFileSync } from 'node:fs';
import WebSocket from 'ws';

const [url, token, seconds, ...send] = process.argv.slice(2);
const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`, { maxPayload: 16 << 20 });
const timer = setTimeout(() => ws.close(), Number(seconds) * 1000);
ws.on('open', () => {
  for (const file of send) ws.send(readFileSync(file, 'utf8'));
});
ws.on('message', (data) => console.log(data.toString()));
ws.on('unexpected-response', (_req, res) => {
  console.log(JSON.stringify({ type: 'http', status: res.statusCode }));
  clearTimeout(timer);
  process.exit(0);
});
ws.on('close', (code) => {
  console.log(JSON.stringify({ type: 'closed', code }));
  clearTimeout(timer);
  process.exit(0);
});
ws.on('error', (e) => {
  console.log(JSON.stringify({ type: 'client_error', message: String(e) }));
});
