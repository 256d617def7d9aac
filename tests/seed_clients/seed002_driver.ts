// Runs seed 002's TypeScript ConversationSyncClient against a live warelay, for tests/integration/test_seed_clients.py.
//
// The class is taken from the seed's "Node.js/TypeScript Example" code block as it is written there
// (the seed file is read at run time, never copied into the repository); only an export line is
// appended so this driver can import it. The seed's own usage sketch needs a LangChain agent (and
// destructures `subdomain` where the field is `subDomain`), so this driver runs the same flow itself:
// lookup tenant -> get conversation -> add the user's and the bot's messages -> sync state.
//
// Usage: tsx seed002_driver.ts <scenario JSON>; the API key comes from WARELAY_API_KEY.
// Prints one JSON object with every answer (and the error a lookup of an unknown number gave).

import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

interface Scenario {
  seed: string;
  baseUrl: string;
  phone: string;
  unknownPhone: string;
  userText: string;
  botText: string;
  intent: string;
  step: string;
  context: Record<string, unknown>;
  metadata: Record<string, unknown>;
}

function codeBlock(text: string, heading: string, language: string): string {
  const at = text.indexOf(heading);
  if (at < 0) throw new Error(`the seed has no "${heading}" section`);
  const fence = '```' + language + '\n';
  const open = text.indexOf(fence, at);
  if (open < 0) throw new Error(`no ${language} code block after "${heading}"`);
  const close = text.indexOf('\n```', open + fence.length);
  if (close < 0) throw new Error(`the ${language} code block after "${heading}" is not closed`);
  return text.slice(open + fence.length, close + 1);
}

function failure(error: unknown): Record<string, unknown> {
  const response = (error as { response?: { status: number; data: unknown } }).response;
  if (response === undefined) throw error;
  return { status: response.status, body: response.data };
}

async function main(): Promise<void> {
  const scenario = JSON.parse(process.argv[2] ?? '') as Scenario;
  const apiKey = process.env.WARELAY_API_KEY;
  if (!apiKey) throw new Error('WARELAY_API_KEY is not set');

  const source = codeBlock(readFileSync(scenario.seed, 'utf8'), '### Node.js/TypeScript Example', 'typescript');
  // Next to node_modules, so the block's `import axios from 'axios'` resolves.
  const here = dirname(fileURLToPath(import.meta.url));
  const generated = join(here, '.generated', `seed002-client-${process.pid}.ts`);
  mkdirSync(dirname(generated), { recursive: true });
  writeFileSync(generated, `${source}\nexport { ConversationSyncClient };\n`);
  try {
    const { ConversationSyncClient } = await import(pathToFileURL(generated).href);
    const client = new ConversationSyncClient(scenario.baseUrl, apiKey);

    const tenant = await client.lookupTenant(scenario.phone);
    const conversation = await client.getConversation(scenario.phone, tenant.botId);
    const userAdded = await client.addMessage(tenant.sessionId, 'user', scenario.userText);
    const botAdded = await client.addMessage(tenant.sessionId, 'bot', scenario.botText);
    const synced = await client.syncConversation(
      tenant.sessionId,
      scenario.intent,
      scenario.step,
      scenario.context,
      scenario.metadata,
    );
    const after = await client.getConversation(scenario.phone);
    let missing: Record<string, unknown>;
    try {
      missing = { resolved: await client.lookupTenant(scenario.unknownPhone) };
    } catch (error) {
      missing = failure(error);
    }
    process.stdout.write(
      JSON.stringify({ tenant, conversation, userAdded, botAdded, synced, after, missing }) + '\n',
    );
  } finally {
    rmSync(generated, { force: true });
  }
}

main().catch((error: unknown) => {
  const detail = (error as { response?: { status: number; data: unknown } }).response;
  process.stderr.write(`${String(error)}${detail ? ` ${detail.status} ${JSON.stringify(detail.data)}` : ''}\n`);
  process.exit(1);
});
