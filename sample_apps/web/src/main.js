// The web app: onnxruntime-web (WebGPU where the browser has a GPU adapter, else wasm) runs the artifact's entry points; everything around them (letterbox,
// panoptic merge, prompt packing, mask upsampling, query-matching tracker) is src/pipeline.js, a port of
// rapsam.pipeline checked against the Python test vectors. The manifest says everything model-specific:
// input size, class names and colours, thresholds, tensor names, prompt slots.
import * as ort from 'onnxruntime-web/webgpu';

import {
  QueryTracker,
  instanceIds,
  letterbox,
  packPrompts,
  panopticMerge,
  promptMasks,
  promptsToBoxes,
  upsampleMaskLogits,
} from './pipeline.js';

const MODEL = new URL('model/', document.baseURI).href;
// Absolute, as onnxruntime-web wants it; served from this build (public/ort), never from a CDN.
ort.env.wasm.wasmPaths = new URL('ort/', document.baseURI).href;
ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;

const PROMPT_COLOURS = [[0, 200, 83], [41, 121, 255], [255, 171, 0], [213, 0, 249], [0, 229, 255], [255, 61, 0]];
const $ = (id) => document.getElementById(id);
// Prompt masks and the prompts' markers on separate layers: the mask layer holds exactly the masks.
const layers = { image: $('image-layer'), panoptic: $('panoptic-layer'), prompt: $('prompt-layer'),
  marker: $('marker-layer') };

// What the tests (and a curious user in the console) can read: the last results and timings.
const state = { manifest: null, sessions: {}, image: null, encoded: null, prompts: [], lastPanoptic: null,
  lastPrompt: null, timings: {}, error: null, busy: Promise.resolve() };
window.rapsam = state;

// Work runs one job at a time; a failed job is shown (and kept for the tests), and the next one still runs.
function enqueue(job) {
  state.busy = state.busy.then(job).catch((error) => {
    state.error = error.message;
    $('status').textContent = `error: ${error.message}`;
    console.error(error);
  });
}

function tensorOf(data, spec) {
  return new ort.Tensor(spec.dtype === 'int32' ? 'int32' : 'float32', data, spec.shape);
}

async function run(entry, feeds) {
  const spec = state.manifest.entry_points[entry];
  const inputs = {};
  for (const input of spec.inputs) inputs[input.name] = tensorOf(feeds[input.name], input);
  const outputs = await state.sessions[entry].run(inputs);
  return Object.fromEntries(spec.outputs.map((o) => [o.name, outputs[o.name].data]));
}

async function loadModel() {
  const manifest = await (await fetch(new URL('manifest.json', MODEL))).json();
  state.manifest = manifest;
  state.isThing = manifest.classes.map((c) => Boolean(c.is_thing));
  state.colours = manifest.classes.map((c) => c.color);
  const started = performance.now();
  state.provider = await webgpuAdapter() ? 'webgpu' : 'wasm';
  for (const entry of ['segment', 'encode', 'prompt']) {
    const file = new URL(manifest.entry_points[entry].file, MODEL).href;
    try {
      state.sessions[entry] = await ort.InferenceSession.create(file, { executionProviders: [state.provider] });
    } catch (error) {
      if (state.provider === 'wasm') throw error;
      console.warn(`WebGPU could not run ${entry} (${error.message}): falling back to wasm`);
      state.provider = 'wasm';
      state.sessions[entry] = await ort.InferenceSession.create(file, { executionProviders: ['wasm'] });
    }
  }
  state.timings.loadMs = performance.now() - started;
  $('model').textContent = `${manifest.model.name} ${manifest.input_size.join('x')} ` +
    `(${manifest.precision.compute}, onnxruntime-web ${state.provider}, loaded in ${state.timings.loadMs.toFixed(0)} ms)`;
}

async function webgpuAdapter() {
  if (new URLSearchParams(location.search).get('ep') === 'wasm' || !navigator.gpu) return null;
  try {
    return await navigator.gpu.requestAdapter();
  } catch {
    return null;
  }
}

function pixelsOf(source, width, height) {
  const canvas = layers.image;
  canvas.width = width;
  canvas.height = height;
  for (const layer of [layers.panoptic, layers.prompt, layers.marker]) {
    layer.width = width;
    layer.height = height;
  }
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(source, 0, 0, width, height);
  return context.getImageData(0, 0, width, height).data;
}

function shapeOf(entry, output) {
  return state.manifest.entry_points[entry].outputs.find((o) => o.name === output).shape;
}

async function segment(rgba, width, height) {
  const { input_size: inputSize, normalization, thresholds } = state.manifest;
  const { tensor, box } = letterbox(rgba, width, height, inputSize, normalization.pad_value);
  const started = performance.now();
  const out = await run('segment', { image: tensor });
  const inferenceMs = performance.now() - started;
  const [, n, h, w] = shapeOf('segment', 'mask_logits');
  const classes = shapeOf('segment', 'class_logits')[2];
  const logits = upsampleMaskLogits(out.mask_logits, n, h, w, box);
  const result = panopticMerge(logits, out.class_logits, n, classes, height, width, state.isThing,
    { objectMaskThreshold: thresholds.object_mask, overlapThreshold: thresholds.overlap });
  state.timings.segmentMs = inferenceMs;
  state.timings.segmentTotalMs = performance.now() - started;
  return { result, queries: out.queries, box };
}

function drawPanoptic(result, trackIds = null) {
  const { width, height } = layers.panoptic;
  const context = layers.panoptic.getContext('2d');
  const picture = context.createImageData(width, height);
  const colours = result.segments.map((s, i) =>
    trackIds && trackIds[i] >= 0 ? PROMPT_COLOURS[trackIds[i] % PROMPT_COLOURS.length] : state.colours[s.classId]);
  for (let p = 0; p < width * height; p++) {
    const id = result.segmentMap[p];
    if (id === 0) continue;
    const colour = colours[id - 1];
    picture.data.set([colour[0], colour[1], colour[2], 128], p * 4);
  }
  context.putImageData(picture, 0, 0);
  if (trackIds) {
    context.fillStyle = '#fff';
    context.font = '12px sans-serif';
    result.segments.forEach((s, i) => {
      if (trackIds[i] < 0) return;
      let sx = 0, sy = 0, count = 0;
      for (let p = 0; p < width * height; p++) {
        if (result.segmentMap[p] === s.id) { sx += p % width; sy += Math.floor(p / width); count++; }
      }
      if (count) context.fillText(String(trackIds[i]), sx / count - 3, sy / count + 4);
    });
  }
  const names = state.manifest.classes;
  $('legend').replaceChildren(...result.segments.map((s, i) => {
    const item = document.createElement('li');
    const swatch = document.createElement('i');
    swatch.style.background = `rgb(${colours[i].join(',')})`;
    const track = trackIds && trackIds[i] >= 0 ? ` #${trackIds[i]}` : '';
    item.append(swatch, `${names[s.classId].name}${track} ${s.score.toFixed(2)}`);
    return item;
  }));
}

async function openImage(blob) {
  stopVideo();
  const bitmap = await createImageBitmap(blob);
  const rgba = pixelsOf(bitmap, bitmap.width, bitmap.height);
  state.image = { rgba, width: bitmap.width, height: bitmap.height };
  state.prompts = [];
  clearPromptLayer();
  $('status').textContent = 'segmenting...';
  const { result, box } = await segment(rgba, bitmap.width, bitmap.height);
  state.lastPanoptic = result;
  drawPanoptic(result);
  // Encode once per image: every click or box then runs only the prompt entry point.
  const started = performance.now();
  const { tensor } = letterbox(rgba, bitmap.width, bitmap.height, state.manifest.input_size,
    state.manifest.normalization.pad_value);
  state.encoded = { features: (await run('encode', { image: tensor })).features, box };
  state.timings.encodeMs = performance.now() - started;
  $('status').textContent = `${result.segments.length} segments`;
  showTimings();
}

function clearPromptLayer() {
  for (const layer of [layers.prompt, layers.marker]) layer.getContext('2d').clearRect(0, 0, layer.width, layer.height);
  state.lastPrompt = null;
}

async function runPrompts() {
  if (!state.encoded || !state.prompts.length) return;
  const started = performance.now();
  const points = state.prompts.filter((p) => p.kind === 'point').map((p) => p.xy);
  const boxes = state.prompts.filter((p) => p.kind === 'box').map((p) => p.xy);
  const { boxes: packedBoxes, kinds } = promptsToBoxes(points, boxes, state.encoded.box);
  const slots = state.manifest.entry_points.prompt.inputs.find((i) => i.name === 'kinds').shape[1];
  const [, , h, w] = shapeOf('prompt', 'mask_logits');
  const masks = [];
  const ious = [];
  for (const chunk of packPrompts(packedBoxes, kinds, slots)) {
    const out = await run('prompt', { features: state.encoded.features, boxes: chunk.boxes, kinds: chunk.kinds });
    const result = promptMasks(out.mask_logits.subarray(0, chunk.count * h * w), out.iou.subarray(0, chunk.count),
      chunk.count, h, w, state.encoded.box, state.manifest.thresholds.mask_logit);
    masks.push(...result.masks);
    ious.push(...result.iou);
  }
  state.timings.promptMs = performance.now() - started;
  state.lastPrompt = { masks, iou: ious, points, boxes };
  drawPrompts(masks);
  showTimings();
}

function drawPrompts(masks) {
  const { width, height } = layers.prompt;
  const context = layers.prompt.getContext('2d');
  const picture = context.createImageData(width, height);
  masks.forEach((mask, k) => {
    const colour = PROMPT_COLOURS[k % PROMPT_COLOURS.length];
    for (let p = 0; p < width * height; p++) if (mask[p]) picture.data.set([colour[0], colour[1], colour[2], 160], p * 4);
  });
  context.putImageData(picture, 0, 0);
  const markers = layers.marker.getContext('2d');
  markers.clearRect(0, 0, width, height);
  markers.strokeStyle = '#fff';
  for (const prompt of state.prompts) {
    if (prompt.kind === 'box') {
      const [x0, y0, x1, y1] = prompt.xy;
      markers.strokeRect(x0, y0, x1 - x0, y1 - y0);
    } else {
      markers.beginPath();
      markers.arc(prompt.xy[0], prompt.xy[1], 4, 0, 2 * Math.PI);
      markers.stroke();
    }
  }
}

function showTimings() {
  const t = state.timings;
  const parts = [`load ${t.loadMs?.toFixed(0)} ms`];
  if (t.segmentMs !== undefined) parts.push(`segment ${t.segmentMs.toFixed(1)} ms (+ merge ${(t.segmentTotalMs - t.segmentMs).toFixed(1)})`);
  if (t.encodeMs !== undefined) parts.push(`encode ${t.encodeMs.toFixed(1)} ms`);
  if (t.promptMs !== undefined) parts.push(`click-to-mask ${t.promptMs.toFixed(1)} ms`);
  if (t.frameMs !== undefined) parts.push(`frame ${t.frameMs.toFixed(1)} ms`);
  $('latency').replaceChildren(...parts.map((text) => Object.assign(document.createElement('div'), { textContent: text })));
}

// Image coordinates of a pointer event (the canvas may be shown scaled).
function imagePoint(event) {
  const rect = layers.prompt.getBoundingClientRect();
  const x = (event.clientX - rect.left) * (layers.prompt.width / rect.width);
  const y = (event.clientY - rect.top) * (layers.prompt.height / rect.height);
  return [Math.min(Math.max(x, 0), layers.prompt.width), Math.min(Math.max(y, 0), layers.prompt.height)];
}

let dragStart = null;
layers.prompt.addEventListener('pointerdown', (event) => { dragStart = imagePoint(event); });
layers.prompt.addEventListener('pointerup', (event) => {
  if (!dragStart || !state.encoded) return;
  const end = imagePoint(event);
  const [x0, y0] = dragStart;
  dragStart = null;
  const dragged = Math.abs(end[0] - x0) > 4 && Math.abs(end[1] - y0) > 4;
  state.prompts.push(dragged
    ? { kind: 'box', xy: [Math.min(x0, end[0]), Math.min(y0, end[1]), Math.max(x0, end[0]), Math.max(y0, end[1])] }
    : { kind: 'point', xy: end });
  enqueue(runPrompts);
});

$('clear').addEventListener('click', () => { state.prompts = []; clearPromptLayer(); });
$('image-file').addEventListener('change', (event) => {
  const [file] = event.target.files;
  if (file) enqueue(() => openImage(file));
});

// Video file or camera: each frame segmented, thing instances keep their ids across frames.
let videoRunning = false;
function stopVideo() {
  videoRunning = false;
  const video = $('video');
  video.pause();
  if (video.srcObject) video.srcObject.getTracks().forEach((t) => t.stop());
  video.srcObject = null;
}

async function playVideo() {
  const video = $('video');
  await video.play();
  const tracker = new QueryTracker();
  state.prompts = [];
  clearPromptLayer();
  videoRunning = true;
  const [, n, d] = shapeOf('segment', 'queries');
  while (videoRunning && !video.ended) {
    const started = performance.now();
    const rgba = pixelsOf(video, video.videoWidth, video.videoHeight);
    const { result, queries } = await segment(rgba, video.videoWidth, video.videoHeight);
    const ids = instanceIds(tracker, result, queries, n, d);
    state.lastPanoptic = result;
    state.lastTrackIds = ids;
    drawPanoptic(result, ids);
    state.timings.frameMs = performance.now() - started;
    showTimings();
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
}

$('video-file').addEventListener('change', (event) => {
  const [file] = event.target.files;
  if (!file) return;
  stopVideo();
  $('video').src = URL.createObjectURL(file);
  enqueue(playVideo);
});
$('camera').addEventListener('click', async () => {
  stopVideo();
  try {
    $('video').srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
    enqueue(playVideo);
  } catch (error) {
    $('status').textContent = `camera: ${error.message}`;
  }
});

state.ready = loadModel().catch((error) => {
  $('model').textContent = `could not load the model: ${error.message} (run npm run model -- ARTIFACT first)`;
  throw error;
});
