// Unit tests of src/pipeline.js against the Python reference's test vectors (rapsam-vectors).
//
//   cd sample_apps/web && node --test test/pipeline.test.mjs
//
// The vectors folder comes from $RAPSAM_VECTORS (default /tmp/jsvec/vectors); it is written with
// `rapsam-vectors --out <dir>` when missing. Where the vectors hold no raw outputs (the clip frames) and for
// the class list, a `before` hook runs the Python reference once (python3 with the rapsam package) and dumps
// what the tests need to a temporary folder; scipy's linear_sum_assignment is the reference of the Hungarian.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";

import pngjs from "pngjs";

import {
  BOX,
  DEFAULT_THRESHOLDS,
  PADDING,
  POINT,
  QueryTracker,
  bilinearResize,
  instanceIds,
  letterbox,
  linearSumAssignment,
  packPrompts,
  panopticMerge,
  promptMasks,
  promptsToBoxes,
  roundHalfEven,
  upsampleMaskLogits,
} from "../src/pipeline.js";

const { PNG } = pngjs;
const VECTORS = process.env.RAPSAM_VECTORS || "/tmp/jsvec/vectors";
const PYTHON = process.env.PYTHON || "python3";

// Dumps the model's class list and, per clip frame, the letterboxed input and raw `segment` outputs.
const DUMP_SCRIPT = `
import json, sys
import numpy as np
from PIL import Image
from rapsam.inference import letterbox
from rapsam.pipeline import open_predictor
from rapsam.postprocess import upsample_mask_logits
from rapsam.vectors import load_tensor
import torch
from pathlib import Path

vectors, out = sys.argv[1], sys.argv[2]
doc = json.load(open(f"{vectors}/vectors.json"))
if doc["source"] == "torch":  # the PyTorch model (rapsam-vectors without a source: the default model)
    predictor = open_predictor(input_size=tuple(doc["input_size"]))
else:
    predictor = open_predictor(doc["source"])

def write(name, value):
    value = np.ascontiguousarray(value)
    dtype = "int32" if np.issubdtype(value.dtype, np.integer) else "float32"
    value.astype("<i4" if dtype == "int32" else "<f4").tofile(f"{out}/{name}.bin")
    return {"file": f"{name}.bin", "shape": list(value.shape), "dtype": dtype}

frames = []
for t, frame in enumerate(doc["clip"]["frames"]):
    image = np.asarray(Image.open(f"{vectors}/{frame['image']}").convert("RGB"))
    x, box = letterbox(image, predictor.input_size, predictor.pad_value)
    outputs = predictor.runner.run("segment", {"image": x.numpy()})
    frames.append({
        "letterbox": {"image_size": list(box.image_size), "valid_size": list(box.valid_size),
                      "input_size": list(box.input_size)},
        "input": write(f"clip{t}.input", x.numpy()),
        **{key: write(f"clip{t}.{key}", value) for key, value in outputs.items()},
    })
# torch's upsample_mask_logits of each photo's stored segment mask logits (checked bit for bit below)
upsampled = {}
for case in doc["photos"]:
    box = case["letterbox"]
    logits = torch.from_numpy(load_tensor(Path(vectors), case["segment"]["mask_logits"])[0].copy())
    up = upsample_mask_logits(logits, input_size=tuple(box["input_size"]), valid_size=tuple(box["valid_size"]),
                              image_size=tuple(box["image_size"]))
    upsampled[case["name"]] = write(f"{case['name']}.upsampled", up.numpy())
meta = {"is_thing": [bool(v) for v in predictor.taxonomy.is_thing],
        "class_names": list(predictor.taxonomy.class_names),
        "pad_value": [float(v) for v in predictor.pad_value], "input_size": list(predictor.input_size),
        "frames": frames, "upsampled": upsampled}
with open(f"{out}/meta.json", "w") as f:
    json.dump(meta, f)
`;

const SCIPY_SCRIPT = `
import json, sys
import numpy as np
from scipy.optimize import linear_sum_assignment
totals = []
for m in json.load(sys.stdin):
    cost = np.asarray(m, dtype=np.float64)
    rows, cols = linear_sum_assignment(cost)
    totals.append(float(cost[rows, cols].sum()))
print(json.dumps(totals))
`;

let doc;
let meta;
let dumpDir;

function loadTensor(folder, entry) {
  const buf = fs.readFileSync(path.join(folder, entry.file));
  const bytes = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength);
  const data = entry.dtype === "int32" ? new Int32Array(bytes) : new Float32Array(bytes);
  assert.equal(data.length, entry.shape.reduce((a, b) => a * b, 1), `${entry.file}: size and shape disagree`);
  return data;
}

function readPng(file) {
  const png = PNG.sync.read(fs.readFileSync(path.join(VECTORS, file)));
  return { width: png.width, height: png.height, rgba: new Uint8ClampedArray(png.data) };
}

/** The first channel of an 8-bit PNG (gray maps decode to RGBA with gray in R, G and B). */
function readGray(file) {
  const { width, height, rgba } = readPng(file);
  const out = new Uint8Array(width * height);
  for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
  return { width, height, data: out };
}

function boxOf(entry) {
  return { imageSize: entry.image_size, validSize: entry.valid_size, inputSize: entry.input_size };
}

function maskIoU(a, b) {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] !== 0;
    const y = b[i] !== 0;
    if (x && y) inter++;
    if (x || y) union++;
  }
  return union ? inter / union : 1;
}

function agreement(a, b) {
  assert.equal(a.length, b.length);
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

/** segment_map PNG + segments of one stored panoptic entry vs a JS merge result. */
function comparePanoptic(t, label, entry, result) {
  const stored = readGray(entry.segment_map);
  const agree = agreement(result.segmentMap, stored.data);
  t.diagnostic(`${label}: segment map pixel agreement ${agree.toFixed(6)} (${stored.width}x${stored.height})`);
  assert.ok(agree >= 0.999, `${label}: segment map agreement ${agree} < 0.999`);
  assert.equal(result.segments.length, entry.segments.length, `${label}: segment count`);
  let worstArea = 0;
  let worstScore = 0;
  entry.segments.forEach((s, i) => {
    const got = result.segments[i];
    assert.equal(got.id, s.id, `${label}: segment ${i} id`);
    assert.equal(got.classId, s.class_id, `${label}: segment ${s.id} class`);
    assert.equal(got.isThing, s.is_thing, `${label}: segment ${s.id} is_thing`);
    const rel = Math.abs(got.area - s.area) / s.area;
    worstArea = Math.max(worstArea, rel);
    assert.ok(rel <= 0.005, `${label}: segment ${s.id} area ${got.area} vs ${s.area}`);
    worstScore = Math.max(worstScore, Math.abs(got.score - s.score));
    assert.ok(Math.abs(got.score - s.score) <= 2e-6, `${label}: segment ${s.id} score ${got.score} vs ${s.score}`);
  });
  t.diagnostic(`${label}: ${entry.segments.length} segments, worst relative area diff ${worstArea}, worst score diff ${worstScore.toExponential(2)}`);
  return agree;
}

function mergePhoto(maskLogits, classLogits, shapeM, shapeC, box) {
  const [, n, h, w] = shapeM;
  const up = upsampleMaskLogits(maskLogits, n, h, w, box);
  const [H, W] = box.imageSize;
  return panopticMerge(up, classLogits, n, shapeC[2], H, W, meta.is_thing, DEFAULT_THRESHOLDS);
}

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

before(() => {
  if (!fs.existsSync(path.join(VECTORS, "vectors.json"))) {
    execFileSync("rapsam-vectors", ["--out", VECTORS], { stdio: "inherit" });
  }
  doc = JSON.parse(fs.readFileSync(path.join(VECTORS, "vectors.json"), "utf8"));
  assert.equal(doc.schema_version, 1);
  dumpDir = fs.mkdtempSync(path.join(os.tmpdir(), "rapsam-js-"));
  execFileSync(PYTHON, ["-c", DUMP_SCRIPT, VECTORS, dumpDir], { stdio: ["ignore", "inherit", "inherit"] });
  meta = JSON.parse(fs.readFileSync(path.join(dumpDir, "meta.json"), "utf8"));
});

after(() => {
  if (dumpDir) fs.rmSync(dumpDir, { recursive: true, force: true });
});

test("roundHalfEven is Python's round", () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001, 3, 84.5, 85.5].map(roundHalfEven),
    [0, 2, 2, 0, -2, 2, 3, 3, 84, 86]);
});

test("bilinearResize: torch align_corners=False on a tiny case", () => {
  // 1x2 -> 1x4: source x = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
  const out = bilinearResize(Float32Array.from([0, 8]), 1, 1, 2, 1, 4);
  assert.deepEqual(Array.from(out), [0, 2, 6, 8]);
  // same size copies
  const src = Float32Array.from([1.5, -2, 3, 4, 5, 6]);
  assert.deepEqual(Array.from(bilinearResize(src, 2, 1, 3, 1, 3)), Array.from(src));
});

test("1. letterbox reproduces the stored input tensor", (t) => {
  for (const photo of doc.photos) {
    const { width, height, rgba } = readPng(photo.image);
    const started = performance.now();
    const { tensor, box } = letterbox(rgba, width, height, doc.input_size, meta.pad_value);
    const ms = performance.now() - started;
    const expected = loadTensor(VECTORS, photo.input);
    assert.deepEqual(box.validSize, photo.letterbox.valid_size, `${photo.name}: valid size`);
    assert.deepEqual(box.imageSize, photo.letterbox.image_size);
    assert.deepEqual(box.inputSize, photo.letterbox.input_size);
    assert.equal(tensor.length, expected.length);
    let maxAbs = 0;
    let exact = 0;
    for (let i = 0; i < tensor.length; i++) {
      const d = Math.abs(tensor[i] - expected[i]);
      if (d > maxAbs) maxAbs = d;
      if (d === 0) exact++;
    }
    t.diagnostic(`${photo.name}: ${width}x${height} -> valid ${box.validSize}, max abs diff ${maxAbs}, ` +
      `bit-identical ${(exact / tensor.length).toFixed(6)}, ${ms.toFixed(1)} ms`);
    assert.ok(maxAbs <= 0.01, `${photo.name}: letterbox max abs diff ${maxAbs}`);
  }
});

test("2a. upsampleMaskLogits reproduces torch's upsample_mask_logits", (t) => {
  for (const photo of doc.photos) {
    const [, k, h, w] = photo.segment.mask_logits.shape;
    const started = performance.now();
    const up = upsampleMaskLogits(loadTensor(VECTORS, photo.segment.mask_logits), k, h, w, boxOf(photo.letterbox));
    const ms = performance.now() - started;
    const expected = loadTensor(dumpDir, meta.upsampled[photo.name]);
    assert.equal(up.length, expected.length);
    let maxAbs = 0;
    let differ = 0;
    for (let i = 0; i < up.length; i++) {
      const d = Math.abs(up[i] - expected[i]);
      if (d > maxAbs) maxAbs = d;
      if (d !== 0) differ++;
    }
    // Bit-identical with PyTorch's CPU kernels built with FMA (x86-64 AVX2/AVX512, aarch64); a build without
    // FMA contraction rounds differently in the last bit, hence a tolerance.
    t.diagnostic(`${photo.name}: [${k}, ${photo.letterbox.image_size}] logits, max abs diff ${maxAbs}, ` +
      `${differ} of ${up.length} values differ, ${ms.toFixed(1)} ms`);
    assert.ok(maxAbs <= 1e-4, `${photo.name}: upsampled logits differ by ${maxAbs}`);
  }
});

test("2. upsampleMaskLogits + panopticMerge reproduce the stored panoptic maps", (t) => {
  for (const photo of doc.photos) {
    const seg = photo.segment;
    const started = performance.now();
    const result = mergePhoto(loadTensor(VECTORS, seg.mask_logits), loadTensor(VECTORS, seg.class_logits),
      seg.mask_logits.shape, seg.class_logits.shape, boxOf(photo.letterbox));
    t.diagnostic(`${photo.name}: upsample + merge ${(performance.now() - started).toFixed(1)} ms`);
    comparePanoptic(t, photo.name, photo.panoptic, result);
  }
});

test("3. promptsToBoxes and promptMasks reproduce the stored prompt inputs and masks", (t) => {
  for (const photo of doc.photos) {
    const pr = photo.prompt;
    const box = boxOf(photo.letterbox);
    const { boxes, kinds } = promptsToBoxes(pr.points, pr.boxes, box);
    const count = pr.points.length + pr.boxes.length;
    assert.equal(boxes.length, count * 4);
    assert.deepEqual(Array.from(kinds), [...pr.points.map(() => POINT), ...pr.boxes.map(() => BOX)]);
    // The stored inputs are one call packed as an app does: the first K prompts, then padding.
    const storedBoxes = loadTensor(VECTORS, pr.inputs.boxes);
    const storedKinds = loadTensor(VECTORS, pr.inputs.kinds);
    const slots = storedKinds.length;
    const [chunk] = packPrompts(boxes, kinds, doc.prompt_slots || slots);
    assert.equal(chunk.kinds.length, slots);
    assert.deepEqual(Array.from(chunk.kinds), Array.from(storedKinds), `${photo.name}: kinds`);
    let maxAbs = 0;
    for (let i = 0; i < storedBoxes.length; i++) maxAbs = Math.max(maxAbs, Math.abs(chunk.boxes[i] - storedBoxes[i]));
    t.diagnostic(`${photo.name}: prompt boxes max abs diff ${maxAbs}`);
    assert.ok(maxAbs <= 1e-4, `${photo.name}: prompt boxes differ by ${maxAbs}`);

    const [, k, h, w] = pr.outputs.mask_logits.shape;
    const res = promptMasks(loadTensor(VECTORS, pr.outputs.mask_logits), loadTensor(VECTORS, pr.outputs.iou),
      k, h, w, box, 0, storedKinds);
    assert.equal(res.masks.length, chunk.count);
    const ious = [];
    res.masks.forEach((mask, i) => {
      const stored = readGray(pr.masks[i]);
      const iou = maskIoU(mask, Array.from(stored.data, (v) => (v > 127 ? 1 : 0)));
      ious.push(iou);
      assert.ok(iou >= 0.999, `${photo.name}: prompt ${i} mask IoU ${iou}`);
      assert.ok(Math.abs(res.iou[i] - pr.iou[i]) <= 1e-5, `${photo.name}: prompt ${i} iou ${res.iou[i]} vs ${pr.iou[i]}`);
    });
    t.diagnostic(`${photo.name}: prompt mask IoUs ${ious.map((v) => v.toFixed(6)).join(", ")}; ` +
      `iou diffs ${res.iou.map((v, i) => Math.abs(v - pr.iou[i]).toExponential(1)).join(", ")}`);
  }
});

test("3b. promptsToBoxes rejects prompts outside the image", () => {
  const box = { imageSize: [100, 200], validSize: [64, 128], inputSize: [128, 128] };
  assert.throws(() => promptsToBoxes([[201, 5]], [], box), /point \(201, 5\) lies outside the 200x100 image/);
  assert.throws(() => promptsToBoxes([[-1, 5]], [], box), /outside/);
  assert.throws(() => promptsToBoxes([], [[10, 10, 10, 20]], box), /box \(10, 10, 10, 20\) is empty or outside/);
  assert.throws(() => promptsToBoxes([], [[0, 0, 201, 20]], box), /empty or outside the 200x100 image/);
  assert.throws(() => promptsToBoxes([], [], box), /give at least one point or box/);
  // on the border is inside
  const { boxes, kinds } = promptsToBoxes([[200, 100]], [[0, 0, 200, 100]], box);
  assert.deepEqual(Array.from(kinds), [POINT, BOX]);
  // x stretched by 128/200 = 0.64, y by 1.28; the click's half-size 3 * 128/128 in x, 3 * 128/64 in y
  assert.deepEqual(Array.from(boxes), [128 - 3, 128 - 6, 128 + 3, 128 + 6, 0, 0, 128, 128]);
});

test("4. packPrompts: 5 prompts into 2 slots", () => {
  const boxes = Float32Array.from({ length: 20 }, (_, i) => i + 1);
  const kinds = Int32Array.from([POINT, POINT, BOX, BOX, BOX]);
  const chunks = packPrompts(boxes, kinds, 2);
  assert.equal(chunks.length, 3);
  assert.deepEqual(chunks.map((c) => c.count), [2, 2, 1]);
  assert.deepEqual(chunks.map((c) => c.first), [0, 2, 4]);
  assert.deepEqual(Array.from(chunks[0].kinds), [POINT, POINT]);
  assert.deepEqual(Array.from(chunks[1].kinds), [BOX, BOX]);
  assert.deepEqual(Array.from(chunks[2].kinds), [BOX, PADDING]);
  assert.deepEqual(Array.from(chunks[1].boxes), [9, 10, 11, 12, 13, 14, 15, 16]);
  assert.deepEqual(Array.from(chunks[2].boxes), [17, 18, 19, 20, 0, 0, 0, 0]);
  for (const c of chunks) assert.equal(c.boxes.length, 8);
  // no slot limit: one chunk of all of them; no prompts: no chunk
  assert.deepEqual(packPrompts(boxes, kinds, null).map((c) => c.count), [5]);
  assert.equal(packPrompts(new Float32Array(0), new Int32Array(0), 2).length, 0);
});

test("5a. QueryTracker on hand-made queries", () => {
  const rand = mulberry32(7);
  const n = 6;
  const d = 16;
  const base = Float32Array.from({ length: n * d }, () => rand() * 2 - 1);
  const permute = (q, perm) => {
    const out = new Float32Array(q.length);
    perm.forEach((src, i) => out.set(q.subarray(src * d, (src + 1) * d), i * d));
    return out;
  };
  const tracker = new QueryTracker();
  // first frame: new ids in increasing query index, -1 where not alive
  let ids = tracker.update(base, n, d, [true, false, true, true, false, true]);
  assert.deepEqual(Array.from(ids), [0, -1, 1, 2, -1, 3]);
  // identity (scaled queries: cosine similarity ignores the norm): same ids
  ids = tracker.update(base.map((v) => v * 3), n, d, [true, false, true, true, false, true]);
  assert.deepEqual(Array.from(ids), [0, -1, 1, 2, -1, 3]);
  // a permutation of the queries: ids follow their queries
  const perm = [5, 3, 0, 1, 4, 2]; // new query i is old query perm[i]
  const alive = [true, false, true, true, false, true];
  ids = tracker.update(permute(base, perm), n, d, perm.map((src) => alive[src]));
  assert.deepEqual(Array.from(ids), [3, 2, 0, -1, -1, 1]);
  // back to the original order; query 1 (never alive) and query 3 (id 2) die; query 4 comes alive: new id 4
  ids = tracker.update(base, n, d, [true, false, true, false, true, true]);
  assert.deepEqual(Array.from(ids), [0, -1, 1, -1, 4, 3]);
  // dead-then-alive is a new track (query 3 had id 2): it gets 6 (after query 1's 5), ids are never reused
  ids = tracker.update(base, n, d, [true, true, true, true, true, true]);
  assert.deepEqual(Array.from(ids), [0, 5, 1, 6, 4, 3]);
  // fewer queries than the previous frame: the smaller side is fully matched
  ids = tracker.update(permute(base, [4, 0]), 2, d, [true, true]);
  assert.deepEqual(Array.from(ids), [4, 0]);
  // more queries than the previous frame: the unmatched ones are new
  ids = tracker.update(base, n, d, [true, true, true, true, true, true]);
  assert.deepEqual(Array.from(ids), [0, 7, 8, 9, 4, 10]);
  // reset: a new video restarts at 0
  tracker.reset();
  assert.deepEqual(Array.from(tracker.update(base, n, d, [false, true, true, false, false, false])), [-1, 0, 1, -1, -1, -1]);
});

test("5b. merge + QueryTracker reproduce the clip's panoptic maps and instance ids", (t) => {
  const tracker = new QueryTracker();
  const frames = doc.clip.frames;
  assert.equal(meta.frames.length, frames.length);
  frames.forEach((frame, i) => {
    const dump = meta.frames[i];
    // the letterbox of the frame PNG against Python's
    const { width, height, rgba } = readPng(frame.image);
    const { tensor, box } = letterbox(rgba, width, height, meta.input_size, meta.pad_value);
    assert.deepEqual(box.validSize, dump.letterbox.valid_size);
    const x = loadTensor(dumpDir, dump.input);
    let maxAbs = 0;
    for (let j = 0; j < x.length; j++) maxAbs = Math.max(maxAbs, Math.abs(tensor[j] - x[j]));
    assert.ok(maxAbs <= 0.01, `clip${i}: letterbox max abs diff ${maxAbs}`);

    const result = mergePhoto(loadTensor(dumpDir, dump.mask_logits), loadTensor(dumpDir, dump.class_logits),
      dump.mask_logits.shape, dump.class_logits.shape, boxOf(dump.letterbox));
    comparePanoptic(t, `clip${i}`, frame, result);
    const [, n, d] = dump.queries.shape;
    const ids = instanceIds(tracker, result, loadTensor(dumpDir, dump.queries), n, d);
    t.diagnostic(`clip${i}: letterbox max abs diff ${maxAbs}; instance ids ${JSON.stringify(ids)} (stored ${JSON.stringify(frame.instance_ids)})`);
    assert.deepEqual(ids, frame.instance_ids, `clip${i}: instance ids`);
  });
});

function bruteForce(cost, n, m) {
  // minimum over all injective maps of the smaller side into the larger one
  const small = Math.min(n, m);
  const large = Math.max(n, m);
  const at = n <= m ? (i, j) => cost[i * m + j] : (i, j) => cost[j * m + i];
  let best = Infinity;
  const used = new Array(large).fill(false);
  const rec = (i, acc) => {
    if (i === small) {
      best = Math.min(best, acc);
      return;
    }
    for (let j = 0; j < large; j++) {
      if (!used[j]) {
        used[j] = true;
        rec(i + 1, acc + at(i, j));
        used[j] = false;
      }
    }
  };
  rec(0, 0);
  return best;
}

test("6. linearSumAssignment matches scipy's optimum on random matrices", (t) => {
  const rand = mulberry32(12345);
  const cases = [];
  for (let c = 0; c < 30; c++) {
    let n = 1 + Math.floor(rand() * 20);
    let m = 1 + Math.floor(rand() * 25);
    if (c % 5 === 4) [n, m] = [Math.min(m, 20), n]; // some taller than wide
    if (c === 0) [n, m] = [20, 25];
    if (c === 1) [n, m] = [25, 20];
    if (c === 2) [n, m] = [20, 20];
    // integer costs (many ties) for some, floats (some negative) for others
    const ints = c % 3 === 0;
    const cost = Float64Array.from({ length: n * m }, () => (ints ? Math.floor(rand() * 5) : rand() * 4 - 1));
    cases.push({ n, m, cost });
  }
  const json = JSON.stringify(cases.map(({ n, m, cost }) => Array.from({ length: n }, (_, i) => Array.from(cost.subarray(i * m, (i + 1) * m)))));
  const scipy = JSON.parse(execFileSync(PYTHON, ["-c", SCIPY_SCRIPT], { input: json, encoding: "utf8" }));
  let worst = 0;
  let brute = 0;
  cases.forEach(({ n, m, cost }, c) => {
    const { rows, cols } = linearSumAssignment(cost, n, m);
    const k = Math.min(n, m);
    assert.equal(rows.length, k);
    assert.equal(new Set(rows).size, k);
    assert.equal(new Set(cols).size, k);
    for (let i = 1; i < k; i++) assert.ok(rows[i] > rows[i - 1], "rows ascending");
    let total = 0;
    for (let i = 0; i < k; i++) {
      assert.ok(rows[i] < n && cols[i] < m);
      total += cost[rows[i] * m + cols[i]];
    }
    const diff = Math.abs(total - scipy[c]);
    worst = Math.max(worst, diff);
    assert.ok(diff <= 1e-9 * Math.max(1, Math.abs(scipy[c])), `case ${c} (${n}x${m}): total ${total} vs scipy ${scipy[c]}`);
    if (Math.min(n, m) <= 6 && Math.max(n, m) <= 8) {
      brute++;
      assert.ok(Math.abs(total - bruteForce(cost, n, m)) <= 1e-9, `case ${c}: brute force`);
    }
  });
  t.diagnostic(`30 matrices (up to 20x25 and 25x20): worst |total - scipy total| ${worst}; ${brute} also brute-forced`);
  assert.throws(() => linearSumAssignment([NaN], 1, 1), /invalid/);
});

test("panopticMerge edge cases", () => {
  // nothing kept: empty result
  const none = panopticMerge(new Float32Array(4), Float32Array.from([0, 5]), 1, 2, 2, 2, [true]);
  assert.equal(none.segments.length, 0);
  assert.deepEqual(Array.from(none.segmentMap), [0, 0, 0, 0]);
  // two stuff queries of one class share a segment; a thing query is its own
  const masks = Float32Array.from([
    9, 9, -9, -9, // q0: stuff class 1, left column
    -9, -9, 9, -9, // q1: stuff class 1, right top
    -9, -9, -9, 9, // q2: thing class 0, right bottom
  ]);
  const cls = Float32Array.from([0, 10, 0, 0, 10, 0, 10, 0, 0]);
  const res = panopticMerge(masks, cls, 3, 3, 2, 2, [true, false]);
  assert.deepEqual(Array.from(res.segmentMap), [1, 1, 1, 2]);
  assert.deepEqual(res.segments.map((s) => [s.id, s.classId, s.isThing, s.area, s.queries]),
    [[1, 1, false, 3, [0, 1]], [2, 0, true, 1, [2]]]);
  assert.throws(() => panopticMerge(masks, cls, 3, 3, 2, 2, [true]), /disagree/);
});
