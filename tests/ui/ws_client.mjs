// Connects to the ticket WebSocket and prints each message it receives as one line, until
// the server closes or the time runs out. usage: node ws_client.mjs URL TOKEN SECONDS
import WebSocket from 'ws';

const [url, token, seconds] = process.argv.slice(2);
const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`);
const timer = setTimeout(() => ws.close(), Number(seconds) * 1000);
ws.on('message', (data) => console.log(data.toString()));
ws.on('unexpected-response', (_req, res) => {
  console.log(JSON.stringify({ type: 'http', status: res.statusCode }));
  clearTimeout(timer);
  process.exit(0);
});
ws.on('close', () => {
  clearTimeout(timer);
  process.exit(0);
});
ws.on('error', (e) => {
  console.log(JSON.stringify({ type: 'client_error', message: String(e) }));
});
