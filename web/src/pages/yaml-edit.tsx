/**
 * Editing a spec as YAML, for kinds whose shape is too varied for a fixed form (trust profiles, device
 * managers). The text is parsed here only to send JSON (the API's writes take JSON with the CSRF
 * header); the server validates it and its problems are listed with their field paths.
 */
import { useState } from 'react';
import { parse } from 'yaml';
import { EditGuard, FormFooter, useExisting, useSaver } from '../form.tsx';
import { applyable, Notice, PageHeader, toYaml } from '../ui.tsx';
import type { SpecDocument } from '../ui.tsx';

const TEMPLATES: Record<string, string> = {
  TrustProfile: `apiVersion: causeway/v1
kind: TrustProfile
metadata: {name: laptops}
spec:
  appliesTo: {platforms: [linux, macos, windows]}
  staleAfter: 15m
  factors:
    - {type: diskEncryption, effect: Medium}
    - {type: firewall, effect: Low}
`,
  AccessTier: `apiVersion: causeway/v1
kind: AccessTier
metadata: {name: edge-1}
spec:
  cluster: global-edge
  address: edge.example.com:8443    # where client proxies and connectors reach it
`,
  Connector: `apiVersion: causeway/v1
kind: Connector
metadata: {name: dc1}
spec:
  cluster: global-edge
  allowedCidrs: [10.0.0.0/8]
  allowedDomains: [.svc.cluster.local]
`,
  DeviceManager: `apiVersion: causeway/v1
kind: DeviceManager
metadata: {name: intune}
spec:
  type: intune
  syncInterval: 20m
  tenantId: 00000000-0000-0000-0000-000000000000
  clientId: 11111111-1111-1111-1111-111111111111
  clientSecret: {env: INTUNE_SECRET}
`,
};

export function YamlEditPage({ kind, name, back }: { kind: string; name: string | undefined; back: string }) {
  const existing = useExisting(kind, name);
  return (
    <EditGuard existing={existing} name={name}>
      <YamlForm kind={kind} existing={existing.doc} back={back} />
    </EditGuard>
  );
}

function YamlForm({ kind, existing, back }: { kind: string; existing: SpecDocument | undefined; back: string }) {
  const [text, setText] = useState(existing === undefined ? TEMPLATES[kind] ?? `apiVersion: causeway/v1\nkind: ${kind}\nmetadata: {name: ''}\nspec: {}\n` : toYaml(applyable(existing)));
  const [parseError, setParseError] = useState<string | undefined>(undefined);
  const saver = useSaver(existing, back);
  return (
    <>
      <PageHeader title={existing === undefined ? `Create ${kind}` : `Edit ${kind} ${existing.metadata.name}`} description="The spec as causeway apply takes it. The server checks every field and lists what is wrong." />
      <form
        className="form form-narrow"
        aria-label={`${kind} YAML`}
        onSubmit={(event) => {
          event.preventDefault();
          let doc: SpecDocument;
          try {
            doc = parse(text) as SpecDocument;
          } catch (err) {
            setParseError(err instanceof Error ? err.message : String(err));
            return;
          }
          if (doc === null || typeof doc !== 'object' || typeof doc.metadata !== 'object' || doc.metadata === null || doc.kind !== kind) {
            setParseError(`the document must be one ${kind} with metadata.name`);
            return;
          }
          if (existing !== undefined && doc.metadata.name !== existing.metadata.name) {
            setParseError(`the name is ${existing.metadata.name}; to rename, create a new ${kind} and delete this one`);
            return;
          }
          setParseError(undefined);
          saver.save(doc);
        }}
      >
        <textarea className="mono yaml-editor" aria-label="YAML" rows={22} value={text} onChange={(e) => setText(e.target.value)} spellCheck={false} />
        {parseError === undefined ? null : <Notice tone="error">The YAML cannot be read: {parseError}</Notice>}
        <FormFooter saver={saver} back={back} submitLabel={existing === undefined ? `Create ${kind}` : 'Save'} claimed={[]} />
      </form>
    </>
  );
}
