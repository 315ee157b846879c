// An OpenClaw plugin that registers the ACP runtime backend "acpx" on the
// engine the official @openclaw/acpx plugin embeds (acpx/runtime from npm's
// acpx, pinned in this folder's lockfile), for machines that cannot install
// the official plugin from ClawHub. OpenClaw spawns agents and runs turns
// through the same code. It leaves out the official plugin's process leases,
// wrapper scripts, MCP bridges and session migration.
//
// One addition: every agent process it starts gets the OpenClaw session key
// in HARNESSD_HOST_SESSION, so that harnessd records the session under the
// name OpenClaw shows (`harnessd runs --session agent:harnessd:acp:...`).
// Other agents ignore the variable.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  registerAcpRuntimeBackend,
  unregisterAcpRuntimeBackend,
  tryDispatchAcpReplyHook,
} from 'openclaw/plugin-sdk/acp-runtime-backend';
import { createAcpRuntime, createAgentRegistry, createFileSessionStore } from 'acpx/runtime';

/// The runtime, with the session key added to the environment of the agent
/// each ensured session starts.
function withHostSessionKey(runtime) {
  return new Proxy(runtime, {
    get(target, prop) {
      if (prop === 'ensureSession') {
        return (input) => {
          if (typeof input?.sessionKey !== 'string') return target.ensureSession(input);
          const options = input.sessionOptions ?? {};
          const env = { ...options.env, HARNESSD_HOST_SESSION: input.sessionKey };
          return target.ensureSession({ ...input, sessionOptions: { ...options, env } });
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === 'function' ? value.bind(target) : value;
    },
  });
}

export default {
  id: 'acpx',
  name: 'ACP runtime (acpx/runtime, shipped with harnessd)',
  register(api) {
    const config = api.pluginConfig ?? {};
    let runtime = null;
    api.registerService({
      id: 'acpx-runtime',
      async start(ctx) {
        const stateDir = config.stateDir ?? path.join(ctx.stateDir ?? process.cwd(), 'acpx-runtime');
        mkdirSync(stateDir, { recursive: true });
        // Agent ids are matched in lower case; each maps to its argv.
        const overrides = {};
        for (const [id, agent] of Object.entries(config.agents ?? {})) {
          overrides[id.toLowerCase()] = [agent.command, ...(agent.args ?? [])];
        }
        runtime = createAcpRuntime({
          cwd: config.cwd ?? ctx.workspaceDir ?? process.cwd(),
          sessionStore: createFileSessionStore({ stateDir }),
          agentRegistry: createAgentRegistry({ overrides }),
          permissionMode: config.permissionMode ?? 'approve-reads',
          nonInteractivePermissions: config.nonInteractivePermissions ?? 'fail',
          timeoutMs: (config.timeoutSeconds ?? 120) * 1000,
          probeAgent: config.probeAgent,
        });
        registerAcpRuntimeBackend({ id: 'acpx', runtime: withHostSessionKey(runtime), healthy: () => runtime?.isHealthy() ?? false });
        try {
          await runtime.probeAvailability();
        } catch (error) {
          ctx.logger?.warn?.(`acpx probe failed: ${error}`);
        }
      },
      async stop() {
        unregisterAcpRuntimeBackend('acpx');
        await runtime?.shutdown?.();
        runtime = null;
      },
    });
    // Routes chat messages addressed to ACP session keys into the ACP control plane.
    api.on('reply_dispatch', (event, ctx) => tryDispatchAcpReplyHook(event, ctx));
  },
};
