// The built app in real headless Chromium, against the artifact's test vectors (written by
// `rapsam-convert --target onnx --vectors`, copied into the build by `npm run model`): open the vector photo
// through the file input, compare the panoptic map, click the vector's point and drag its box on the canvas,
// and compare the rendered mask pixels with the Python reference. Saves a screenshot; exits non-zero on a
// failed check.   npm run build && node test/chromium.test.mjs
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';
import { PNG } from 'pngjs';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(root, 'dist');
const vectorsDir = join(dist, 'model', 'vectors');
const outDir = join(root, 'test-output');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png' };

function fail(message) {
  console.error(`error: ${message}`);
  process.exit(2);
}

if (!existsSync(join(dist, 'index.html'))) fail('no build: run npm run model -- ARTIFACT && npm run build first');
if (!existsSync(join(vectorsDir, 'vectors.json'))) {
  fail('the build has no test vectors: convert with rapsam-convert --target onnx --vectors, then npm run model');
}
if (!existsSync(CHROMIUM)) fail(`${CHROMIUM} not found: apt-get install chromium (or set CHROMIUM=/path/to/chrome)`);

const vectors = JSON.parse(readFileSync(join(vectorsDir, 'vectors.json'), 'utf8'));
const png = (name) => PNG.sync.read(readFileSync(join(vectorsDir, name)));

function serve() {
  const server = createServer((request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url, 'http://x').pathname)).replace(/^(\.\.[/\\])+/, '');
    const file = join(dist, path.endsWith('/') ? `${path}index.html` : path);
    if (!file.startsWith(dist) || !existsSync(file)) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'Content-Type': TYPES[extname(file)] || 'application/octet-stream' });
    response.end(readFileSync(file));
  });
  return new Promise((done) => server.listen(0, '127.0.0.1', () => done(server)));
}

function maskIou(a, b) {
  let inter = 0, union = 0;
  for (let p = 0; p < a.length; p++) {
    inter += a[p] && b[p] ? 1 : 0;
    union += a[p] || b[p] ? 1 : 0;
  }
  return union ? inter / union : 1;
}

const checks = [];
function check(name, value, limit, atLeast = true) {
  const passed = atLeast ? value >= limit : value <= limit;
  checks.push({ name, value, limit, passed });
  console.log(`${passed ? 'ok    ' : 'FAILED'} ${name}: ${value.toFixed(6)} (${atLeast ? '>=' : '<='} ${limit})`);
}

let provider = 'unknown';
const server = await serve();
const url = `http://127.0.0.1:${server.address().port}/`;
const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', ...(process.env.CHROMIUM_ARGS || '').split(' ').filter(Boolean)],
});
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => { if (message.type() === 'error') errors.push(message.text()); });
  // Waits for the app's state, or stops at the first error the app reports.
  const until = async (predicate) => {
    await page.waitForFunction(`window.rapsam.error !== null || (${predicate})`, null, { timeout: Number(process.env.WAIT_MS || 30000) });
    const error = await page.evaluate(() => window.rapsam.error);
    if (error) throw new Error(`the app failed: ${error}`);
  };
  await page.goto(url + (process.env.EP ? `?ep=${process.env.EP}` : ''));
  await page.evaluate(() => window.rapsam.ready);
  provider = await page.evaluate(() => window.rapsam.provider);
  console.log(`onnxruntime-web execution provider: ${provider}`);
  if (process.env.EXPECT_EP) check(`runs on ${process.env.EXPECT_EP}`, Number(provider === process.env.EXPECT_EP), 1);
  const tol = vectors.tolerances;
  for (const photo of vectors.photos) {
    const [height, width] = photo.letterbox.image_size;
    await page.setInputFiles('#image-file', join(vectorsDir, photo.image));
    await until('window.rapsam.encoded !== null && window.rapsam.lastPanoptic !== null');
    await page.evaluate(() => window.rapsam.busy);

    // Panoptic: the class of every pixel, the app's against the reference's.
    const appMap = await page.evaluate(() => {
      const { segmentMap, segments } = window.rapsam.lastPanoptic;
      const classes = new Int32Array(segmentMap.length);
      for (let p = 0; p < segmentMap.length; p++) classes[p] = segmentMap[p] ? segments[segmentMap[p] - 1].classId : -1;
      return Array.from(classes);
    });
    const reference = png(photo.panoptic.segment_map);
    const classOf = new Map(photo.panoptic.segments.map((s) => [s.id, s.class_id]));
    let agree = 0;
    for (let p = 0; p < width * height; p++) {
      const id = reference.data[p * 4];
      agree += (id ? classOf.get(id) : -1) === appMap[p] ? 1 : 0;
    }
    check(`${photo.name} panoptic class agreement`, agree / (width * height), tol.segment_agreement);

    // Prompts through the real canvas: a click at each vector point, a drag for each vector box; each compared
    // alone (cleared before) on the pixels the app rendered.
    const canvas = await page.locator('#prompt-layer').boundingBox();
    const gestures = [...photo.prompt.points.map((p) => ({ kind: 'point', xy: p })),
      ...photo.prompt.boxes.map((b) => ({ kind: 'box', xy: b }))];
    for (const [k, gesture] of gestures.entries()) {
      await page.click('#clear');
      const at = (x, y) => [canvas.x + x * (canvas.width / width), canvas.y + y * (canvas.height / height)];
      const [x0, y0] = at(gesture.xy[0], gesture.xy[1]);
      await page.mouse.move(x0, y0);
      await page.mouse.down();
      if (gesture.kind === 'box') await page.mouse.move(...at(gesture.xy[2], gesture.xy[3]), { steps: 4 });
      await page.mouse.up();
      await until('window.rapsam.lastPrompt !== null');
      await page.evaluate(() => window.rapsam.busy);
      const rendered = await page.evaluate(() => {
        const layer = document.getElementById('prompt-layer');
        const { data } = layer.getContext('2d').getImageData(0, 0, layer.width, layer.height);
        const alpha = new Uint8Array(layer.width * layer.height);
        for (let p = 0; p < alpha.length; p++) alpha[p] = data[p * 4 + 3] >= 128 ? 1 : 0;
        return { alpha: Array.from(alpha), iou: window.rapsam.lastPrompt.iou[0], ms: window.rapsam.timings.promptMs };
      });
      const expected = png(photo.prompt.masks[k]);
      const mask = new Uint8Array(width * height);
      for (let p = 0; p < mask.length; p++) mask[p] = expected.data[p * 4] > 127 ? 1 : 0;
      check(`${photo.name} ${gesture.kind} ${k} rendered mask IoU`, maskIou(rendered.alpha, mask), tol.mask_iou);
      check(`${photo.name} ${gesture.kind} ${k} IoU score error`, Math.abs(rendered.iou - photo.prompt.iou[k]),
        tol.iou_abs, false);
      console.log(`       click-to-mask ${rendered.ms.toFixed(1)} ms`);
    }
  }
  mkdirSync(outDir, { recursive: true });
  await page.click('#clear');
  const last = vectors.photos[vectors.photos.length - 1];
  const [lh, lw] = last.letterbox.image_size;
  const box = await page.locator('#prompt-layer').boundingBox();
  await page.mouse.click(box.x + last.prompt.points[0][0] * (box.width / lw), box.y + last.prompt.points[0][1] * (box.height / lh));
  await page.evaluate(() => window.rapsam.busy);
  await page.screenshot({ path: join(outDir, `web-app-${provider}.png`) });
  check('page errors', errors.length, 0, false);
  if (errors.length) console.error(errors.join('\n'));
} finally {
  await browser.close();
  server.close();
}
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, `chromium-checks-${provider}.json`), JSON.stringify(checks, null, 1));
const failed = checks.filter((c) => !c.passed).length;
console.log(failed ? `web app FAILED (${failed} of ${checks.length} checks)` : `web app PASSED (${checks.length} checks)`);
process.exit(failed ? 1 : 0);
