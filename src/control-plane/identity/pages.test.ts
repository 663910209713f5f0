import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { PageContext } from './pages.ts';
import { escapeHtml, logoutSource, PAGE_CSP, PAGE_HEADERS, postLogoutSuccessSource, renderPage, renderProviderError, STYLESHEET, STYLESHEET_PATH, successSource, userCodeConfirmSource, userCodeInputSource } from './pages.ts';

const HOSTILE = `<script>alert("x")</script><img src=x onerror='y'>&\``;

function fakeContext(extra: Partial<PageContext> = {}): PageContext & { headers: Record<string, string> } {
  const headers: Record<string, string> = {};
  return { type: '', body: undefined, headers, set(field, value) { headers[field.toLowerCase()] = value; }, ...extra };
}

/** No inline script, no inline style, no event handler attributes: what the CSP forbids must not be needed. */
function assertNoInlineCode(html: string): void {
  assert.doesNotMatch(html, /<script/i);
  assert.doesNotMatch(html, /<style/i);
  assert.doesNotMatch(html, /\sstyle=/i);
  assert.doesNotMatch(html, /<[^>]*\son[a-z]+=/i);
}

void describe('pages', () => {
  void it('escapeHtml turns every HTML-significant character into an entity', () => {
    assert.equal(escapeHtml(HOSTILE), '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=&#39;y&#39;&gt;&amp;&#96;');
    assert.equal(escapeHtml(undefined), '');
    assert.equal(escapeHtml(42), '42');
  });

  void it('CP-05 the CSP forbids inline script and style and framing, and allows forms only to this origin and loopback', () => {
    assert.doesNotMatch(PAGE_CSP, /unsafe-inline|unsafe-eval|\s\*(\s|;|$)|https?:\/\/\*/);
    assert.match(PAGE_CSP, /default-src 'none'/);
    assert.match(PAGE_CSP, /style-src 'self'(;|$)/);
    assert.match(PAGE_CSP, /frame-ancestors 'none'/);
    assert.match(PAGE_CSP, /base-uri 'none'/);
    assert.match(PAGE_CSP, /form-action 'self' http:\/\/127\.0\.0\.1:\*(;|$)/);
    assert.equal(PAGE_HEADERS['x-frame-options'], 'DENY');
    assert.equal(PAGE_HEADERS['content-security-policy'], PAGE_CSP);
  });

  void it('renderPage escapes the title, links the stylesheet and has no inline code', () => {
    const html = renderPage({ title: HOSTILE, body: '<p>hello</p>' });
    assert.ok(html.includes(`<link rel="stylesheet" href="${STYLESHEET_PATH}">`));
    assert.ok(html.includes('<p>hello</p>'));
    assert.ok(!html.includes('<script>alert'));
    assertNoInlineCode(html);
    assert.ok(STYLESHEET.length > 100);
  });

  void it('CP-05 the provider error page shows the description as text, never markup', async () => {
    const ctx = fakeContext();
    await renderProviderError(ctx, { error: 'invalid_request', error_description: HOSTILE }, new Error('stack must not show'));
    const html = String(ctx.body);
    assert.equal(ctx.type, 'html');
    assert.ok(html.includes('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;'));
    assert.ok(!html.includes('<img src=x'));
    assert.ok(!html.includes('stack must not show'));
    assertNoInlineCode(html);
    assert.equal(ctx.headers['content-security-policy'], PAGE_CSP);
  });

  void it('the device code pages keep oidc-provider forms but drop their inline handlers and escape the client name', async () => {
    const form = '<form id="op.deviceInputForm" novalidate method="post" action="/oidc/device"><input type="hidden" name="xsrf" value="abc"/><input type="text" name="user_code" onfocus="this.select(); this.onfocus = undefined;" autofocus></input></form>';
    const input = fakeContext();
    await userCodeInputSource(input, form, {}, undefined);
    assert.ok(String(input.body).includes('name="xsrf" value="abc"'));
    assertNoInlineCode(String(input.body));
    const wrong = fakeContext();
    await userCodeInputSource(wrong, form, {}, { name: 'NoCodeError' });
    assert.match(String(wrong.body), /not valid/);

    const confirm = fakeContext();
    const confirmForm = '<form id="op.deviceConfirmForm" method="post" action="/oidc/device"><input type="hidden" name="xsrf" value="abc"/></form>';
    await userCodeConfirmSource(confirm, confirmForm, { clientId: 'causeway-cli', clientName: HOSTILE }, { ip: '10.0.0.1', ua: HOSTILE }, 'ABCD-EFGH');
    const html = String(confirm.body);
    assert.ok(html.includes('ABCD-EFGH'));
    assert.ok(!html.includes('<script>alert'));
    assertNoInlineCode(html);

    const success = fakeContext({ oidc: { client: { clientId: 'x', clientName: HOSTILE } } });
    await successSource(success);
    assert.ok(!String(success.body).includes('<script>alert'));
    assertNoInlineCode(String(success.body));
  });

  void it('the logout pages escape the host and carry the page headers', async () => {
    const ctx = fakeContext({ host: HOSTILE });
    await logoutSource(ctx, '<form id="op.logoutForm" method="post" action="/oidc/session/end/confirm"><input type="hidden" name="xsrf" value="s"/></form>');
    assert.ok(!String(ctx.body).includes('<script>alert'));
    assert.ok(String(ctx.body).includes('form="op.logoutForm"'));
    assertNoInlineCode(String(ctx.body));
    const done = fakeContext();
    await postLogoutSuccessSource(done);
    assert.match(String(done.body), /logged out/);
    assert.equal(done.headers['x-frame-options'], 'DENY');
  });
});
