// Calls one gateway RPC method with operator.admin scope and prints the JSON
// result. The stock `openclaw gateway call` asks for the least scope a method
// needs, and the /acp runtime controls (spawn, cancel, close) need admin.
// Usage: node gateway-call.mjs METHOD PARAMS_JSON   (run by OpenClaw's Node)
import { callGatewayFromCli } from 'openclaw/plugin-sdk/gateway-runtime';

const [method, params = '{}'] = process.argv.slice(2);
const result = await callGatewayFromCli(method, { json: true, timeout: '60000' }, JSON.parse(params), {
  scopes: ['operator.admin'],
  progress: false,
});
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
