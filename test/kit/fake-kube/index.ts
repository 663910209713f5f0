/**
 * The fake Kubernetes API server, for end-to-end tests, the quickstart's demo cluster and the
 * benchmark. It is product code with its own tests (test/kit/fake-kube/*.test.ts).
 *
 *     const kube = await startFakeKube({ dnsNames: ['kube.demo.causeway.test'] });
 *     t.after(() => kube.close());
 *     const kubeconfig = writeKubeconfig(dir, { server: kube.url, caPem: kube.caPem }); // ../kubectl.ts
 *
 * What it serves (HTTPS, HTTP/1.1):
 * - discovery: /version, /api, /apis, /api/v1, aggregated (apidiscovery.k8s.io/v2) when asked;
 * - pods: list (/api/v1/pods, /api/v1/namespaces/NS/pods) and get, as JSON or Table, label and
 *   field selectors, watch (?watch=true) with kubectl's list-then-watch resourceVersion semantics,
 *   Table watch events; namespaces; an empty events list;
 * - logs: .../pods/NAME/log, with follow, tailLines, timestamps, container;
 * - exec and attach: WebSocket (v5.channel.k8s.io / v4.channel.k8s.io) and SPDY/3.1 (a POST with
 *   Upgrade: SPDY/3.1, one stream per channel named by `streamtype`, the Status on the error
 *   stream) running fake commands (echo, cat [FILE], ls, test -d|-f|-e, mkdir [-p], tar c|x|t,
 *   hostname, env, seq N, sleep N, true, false, sh -c "…; exit N") against each pod's in-memory
 *   filesystem, so `kubectl cp` works both ways; attach is a main process that echoes stdin;
 * - port-forward: SPDY/3.1 in a WebSocket (SPDY/3.1+portforward.k8s.io) or on an Upgrade: SPDY/3.1
 *   POST, to setPortForwardTarget()'s port or a built-in echo.
 *
 * Who a request is: anonymous by default; or a fixed bearer token (`bearerToken`), verified OIDC
 * ID tokens (`oidc`), a hook (`authenticate`), or — behind Causeway's kube proxy — `impersonation`:
 * only the proxy's credentials are accepted and every request must carry Impersonate-User (the
 * recorded `user` is the impersonated one, with groups, extras and `impersonator`). `authorize`
 * stands in for RBAC. Every request's raw headers are kept in `requests[i].rawHeaders`.
 *
 * Tests inject changes with addPod/modifyPod/deletePod/appendLog/writeFile and read `requests`,
 * `execs`, `portForwards` and readFile(). Note that the Google Cloud SDK's kubectl dispatcher (/usr/bin/kubectl on some
 * machines) sends its own GET /version before each command.
 */
export { startFakeKube, BIG_NAMESPACE, defaultPodInputs } from './server.ts';
export type { FakeKube, FakeKubeAuthzRequest, FakeKubeImpersonationOptions, FakeKubeOptions, FakeKubeUser, RecordedExec, RecordedPortForward, RecordedRequest } from './types.ts';
export { readTar, writeTar } from './tar.ts';
export type { TarEntry } from './tar.ts';
export type { FakePodInput, PodObject, PodPatch, PodPhase } from './pods.ts';
export { fakeCommands } from './exec.ts';
