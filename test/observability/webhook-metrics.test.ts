/**
 * The webhook's metrics, through its HTTP server: each AdmissionReview counted once by outcome,
 * every image left alone counted under its bounded reason (never the image), rewritten images
 * counted, and the latency observed for each answered review.
 */
import t from 'tap';
import { WebhookMetrics } from '../../src/observability/metrics.js';
import { createRewritePolicy } from '../../src/webhook/policy.js';
import { createWebhookServer } from '../../src/webhook/server.js';
import { admissionReview, containers, pod } from '../webhook/helpers.js';

async function counts(metrics: WebhookMetrics): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of [metrics.admissions, metrics.skippedImages, metrics.rewrittenImages]) {
    const { name, values } = await m.get();
    for (const v of values) {
      const label = Object.values(v.labels)[0];
      out[label === undefined ? name : `${name}{${String(label)}}`] = v.value;
    }
  }
  return out;
}

t.test('admissions by outcome, images by reason', async (t) => {
  const metrics = new WebhookMetrics({ defaults: false });
  const policy = createRewritePolicy({
    proxyHost: 'localhost:7439',
    ownNamespace: 'pullthrough',
    ignoreImages: ['^quay\\.io/'],
    acceptImages: ['^(docker\\.io|quay\\.io|ghcr\\.io)/'],
    skipPullPolicies: ['Never'],
  });
  const { app } = createWebhookServer({ policy, metrics, maxBodyBytes: 64 * 1024 });
  t.teardown(() => app.close());
  const post = async (payload: string) =>
    (await app.inject({ method: 'POST', url: '/mutate', payload, headers: { 'content-type': 'application/json' } }))
      .statusCode;

  const spec = {
    containers: [
      ...containers('nginx:1.27', 'quay.io/org/tool:1', 'registry.k8s.io/pause:3.9', 'Not A Ref'),
      { name: 'never', image: 'ghcr.io/org/app:v2', imagePullPolicy: 'Never' },
      { name: 'none' },
    ],
  };
  t.equal(await post(JSON.stringify(admissionReview(pod(spec)))), 200);
  t.equal(await post(JSON.stringify(admissionReview(pod(spec), { namespace: 'kube-system' }))), 200);
  const ignored = pod(spec, { labels: { 'pullthrough.dev/image-caching-policy': 'ignore' } });
  t.equal(await post(JSON.stringify(admissionReview(ignored))), 200);
  t.equal(await post('not json'), 400);
  t.equal(await post(JSON.stringify({ padding: 'x'.repeat(70 * 1024) })), 400, 'larger than the body limit');

  t.same(await counts(metrics), {
    'pullthrough_webhook_admissions_total{rewritten}': 1,
    'pullthrough_webhook_admissions_total{unchanged}': 2,
    'pullthrough_webhook_admissions_total{invalid}': 2,
    'pullthrough_webhook_skipped_images_total{ignore-images}': 1,
    'pullthrough_webhook_skipped_images_total{not-accepted}': 1,
    'pullthrough_webhook_skipped_images_total{invalid-reference}': 1,
    'pullthrough_webhook_skipped_images_total{pull-policy}': 1,
    'pullthrough_webhook_skipped_images_total{no-image}': 1,
    'pullthrough_webhook_skipped_images_total{namespace-excluded}': 6,
    'pullthrough_webhook_skipped_images_total{pod-ignored}': 6,
    pullthrough_webhook_rewritten_images_total: 1,
  });
  const duration = (await metrics.duration.get()).values.find(
    (v) => v.metricName === 'pullthrough_webhook_admission_duration_seconds_count',
  );
  t.equal(duration?.value, 3, 'latency observed for every review answered');
  t.notMatch(await metrics.registry.metrics(), /nginx|quay|ghcr|pause/, 'no image in any label');
});
