// The official @openclaw/acpx plugin is fetched from ClawHub, which an offline
// machine cannot reach. This stand-in registers the same backend id ("acpx")
// on the same engine the official plugin embeds (acpx/runtime from the pinned
// npm acpx), so OpenClaw spawns agents and runs turns through the same code.
// It leaves out what the test does not need: process leases, wrapper scripts,
// the MCP bridges and session migration.
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import {
  registerAcpRuntimeBackend,
  unregisterAcpRuntimeBackend,
  tryDispatchAcpReplyHook,
} from 'openclaw/plugin-sdk/acp-runtime-backend';
import { createAcpRuntime, createAgentRegistry, createFileSessionStore } from 'acpx/runtime';

export default {
  id: 'acpx',
  name: 'ACP runtime (acpx/runtime, test stand-in)',
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
        registerAcpRuntimeBackend({ id: 'acpx', runtime, healthy: () => runtime?.isHealthy() ?? false });
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
