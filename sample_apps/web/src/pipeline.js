// Browser-side pre- and post-processing of RAP-SAM: an exact port of the Python reference
// (rapsam/inference.py `letterbox`, `prompts_to_boxes`; rapsam/postprocess.py `upsample_mask_logits`,
// `panoptic_merge`, `prompt_masks`, `QueryTracker`, `instance_ids`; rapsam/pipeline.py `prompt`'s packing
// of prompts into an artifact's K slots). Plain ES module, no dependencies, no DOM.
//
// Tensors are flat typed arrays in row-major (C) order, as onnxruntime-web hands them out; sizes are
// [height, width] pairs as in the Python code. float32 arithmetic of the reference is reproduced with
// Math.fround so that results agree with PyTorch bit for bit where it matters (thresholds, argmax).

// The official model turns a click into a box of this half-size, in pixels of the resized image.
export const CLICK_HALF_SIZE = 3.0;
// Prompt kinds of the export contract (rapsam/models/head.py).
export const POINT = 0;
export const BOX = 1;
export const PADDING = -1;
// PanopticThresholds() defaults (rapsam/postprocess.py).
export const DEFAULT_THRESHOLDS = Object.freeze({ objectMaskThreshold: 0.8, overlapThreshold: 0.8 });

const fround = Math.fround;

// ----------------------------------------------------------------------------- float32 helpers

/** Python's round() for floats: round half to even. */
export function roundHalfEven(value) {
  const floor = Math.floor(value);
  const diff = value - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * float32 fused multiply-add fl32(a * b + c) for float32 a, b, c, rounded once as a hardware FMA does.
 * a * b is exact in float64; the float64 sum is rounded again to float32, which can only go wrong when
 * the sum lands exactly on a float32 midpoint: then the exact error of the sum (TwoSum) decides.
 */
function fma32(a, b, c) {
  const p = a * b;
  const s = p + c;
  const r = fround(s);
  const d = s - r;
  if (d !== 0) {
    const other = r + 2 * d;
    if (fround(other) === other) { // s is halfway between the float32 values r and other
      const bv = s - p;
      const err = (p - (s - bv)) + (c - bv);
      if (err !== 0 && (err > 0) === (d > 0)) return other;
    }
  }
  return r;
}

// ----------------------------------------------------------------------------- resize

/**
 * Source indices and weights of one axis, as ATen's `compute_indices_weights` for linear interpolation
 * (align_corners=False, no scale factor given): scale = float(in) / out, src = scale * (dst + 0.5) - 0.5
 * (contracted to an FMA by the compiler in PyTorch's CPU kernels) clamped at 0, i0 = min(floor(src), in - 1),
 * i1 = i0 + 1 unless at the border, lambda = clamp(src - i0, 0, 1). Equal sizes copy.
 */
function axisWeights(inSize, outSize) {
  const i0 = new Int32Array(outSize);
  const i1 = new Int32Array(outSize);
  const w0 = new Float32Array(outSize);
  const w1 = new Float32Array(outSize);
  if (inSize === outSize) {
    for (let i = 0; i < outSize; i++) {
      i0[i] = i;
      i1[i] = i;
      w0[i] = 1;
      w1[i] = 0;
    }
    return { i0, i1, w0, w1 };
  }
  const scale = fround(inSize / outSize);
  for (let i = 0; i < outSize; i++) {
    let src = fma32(scale, fround(i + 0.5), -0.5);
    if (src < 0) src = 0;
    const index = Math.min(Math.floor(src), inSize - 1);
    const lambda = Math.min(Math.max(fround(src - index), 0), 1);
    i0[i] = index;
    i1[i] = index < inSize - 1 ? index + 1 : index;
    w1[i] = lambda;
    w0[i] = fround(1 - lambda);
  }
  return { i0, i1, w0, w1 };
}

/**
 * torch `F.interpolate(x, size=(dstH, dstW), mode="bilinear", align_corners=False)` (no antialias) of a
 * [channels, srcH, srcW] float32 array, read from rows [0, srcH) and columns [0, srcW) of a source of row
 * length `srcStride` and plane size `srcPlane` (defaults: a dense array, so crops need no copy).
 * Per output pixel, as PyTorch's generic CPU kernel evaluates it:
 *   t0 = fma(x[y0,x0], wx0, x[y0,x1] * wx1), t1 likewise on row y1, out = fma(t0, wy0, t1 * wy1).
 * The row interpolations t are cached per source row, which gives the same numbers.
 */
export function bilinearResize(src, channels, srcH, srcW, dstH, dstW, srcStride = srcW, srcPlane = srcH * srcStride) {
  const out = new Float32Array(channels * dstH * dstW);
  if (dstH === 0 || dstW === 0 || channels === 0) return out;
  if (srcH <= 0 || srcW <= 0) throw new RangeError(`cannot resize an empty ${srcH}x${srcW} input`);
  const ax = axisWeights(srcW, dstW);
  const ay = axisWeights(srcH, dstH);
  const rows = new Float32Array(srcH * dstW); // row interpolations of one channel
  const rowDone = new Uint8Array(srcH);
  const { i0: xi0, i1: xi1, w0: xw0, w1: xw1 } = ax;
  for (let c = 0; c < channels; c++) {
    const base = c * srcPlane;
    rowDone.fill(0);
    const rowAt = (y) => {
      if (!rowDone[y]) {
        const s = base + y * srcStride;
        const o = y * dstW;
        for (let x = 0; x < dstW; x++) {
          rows[o + x] = fma32(src[s + xi0[x]], xw0[x], fround(src[s + xi1[x]] * xw1[x]));
        }
        rowDone[y] = 1;
      }
      return y * dstW;
    };
    const outBase = c * dstH * dstW;
    for (let y = 0; y < dstH; y++) {
      const r0 = rowAt(ay.i0[y]);
      const r1 = rowAt(ay.i1[y]);
      const wy0 = ay.w0[y];
      const wy1 = ay.w1[y];
      const o = outBase + y * dstW;
      for (let x = 0; x < dstW; x++) {
        out[o + x] = fma32(rows[r0 + x], wy0, fround(rows[r1 + x] * wy1));
      }
    }
  }
  return out;
}

// ----------------------------------------------------------------------------- letterbox

/**
 * RGBA pixels (ImageData.data layout) -> { tensor: Float32Array [1, 3, H_in, W_in] RGB 0..255, box }.
 * The image is resized keeping its aspect ratio to validSize = (max(1, round(h * s)), max(1, round(w * s)))
 * with s = min(H_in / h, W_in / w) (Python round: half to even) and padded bottom/right with `padValue`.
 * box: { imageSize: [h, w], validSize: [h, w], inputSize: [H_in, W_in] } (Python's Letterbox).
 */
export function letterbox(rgba, width, height, inputSize, padValue) {
  if (!(width >= 1 && height >= 1)) throw new RangeError(`image has an empty side: ${height}x${width}`);
  if (rgba.length < width * height * 4) {
    throw new RangeError(`expected ${width * height * 4} RGBA values for a ${width}x${height} image, got ${rgba.length}`);
  }
  const [inH, inW] = inputSize;
  const scale = Math.min(inH / height, inW / width);
  const valid = [Math.max(1, roundHalfEven(height * scale)), Math.max(1, roundHalfEven(width * scale))];
  const plane = width * height;
  const rgb = new Float32Array(3 * plane);
  for (let i = 0, j = 0; i < plane; i++, j += 4) {
    rgb[i] = rgba[j];
    rgb[plane + i] = rgba[j + 1];
    rgb[2 * plane + i] = rgba[j + 2];
  }
  const resized = bilinearResize(rgb, 3, height, width, valid[0], valid[1]);
  const tensor = new Float32Array(3 * inH * inW);
  for (let c = 0; c < 3; c++) {
    const o = c * inH * inW;
    tensor.fill(fround(padValue[c]), o, o + inH * inW);
    for (let y = 0; y < valid[0]; y++) {
      const s = (c * valid[0] + y) * valid[1];
      tensor.set(resized.subarray(s, s + valid[1]), o + y * inW);
    }
  }
  return { tensor, box: { imageSize: [height, width], validSize: valid, inputSize: [inH, inW] } };
}

// ----------------------------------------------------------------------------- masks

/**
 * Stride-4 mask logits [k, h, w] -> [k, imageH, imageW] float32 logits on the user's image, as
 * upsample_mask_logits: bilinear to box.inputSize, crop the top-left box.validSize, bilinear to box.imageSize.
 */
export function upsampleMaskLogits(maskLogits, k, h, w, box) {
  const [inH, inW] = box.inputSize;
  const [validH, validW] = box.validSize;
  const [imageH, imageW] = box.imageSize;
  if (validH > inH || validW > inW) {
    throw new RangeError(`valid_size [${validH}, ${validW}] exceeds input_size [${inH}, ${inW}]`);
  }
  if (maskLogits.length < k * h * w) throw new RangeError(`expected ${k}x${h}x${w} mask logits, got ${maskLogits.length} values`);
  if (k === 0) return new Float32Array(0);
  const input = bilinearResize(maskLogits, k, h, w, inH, inW);
  // The crop is read in place: rows [0, validH), columns [0, validW) of each inH x inW plane.
  return bilinearResize(input, k, validH, validW, imageH, imageW, inW, inH * inW);
}

/** float32 sigmoid of a float32 logit, as torch's (1 + exp(-x))^-1 rounded to float32. */
function sigmoid32(x) {
  return fround(1 / (1 + Math.exp(-x)));
}

/** Softmax over the last axis of one row of float32 logits, in float32 as PyTorch's CPU kernel. */
function softmaxRow(logits, offset, count, out) {
  let max = -Infinity;
  for (let c = 0; c < count; c++) if (logits[offset + c] > max) max = logits[offset + c];
  let sum = 0;
  for (let c = 0; c < count; c++) {
    out[c] = fround(Math.exp(fround(logits[offset + c] - max)));
    sum = fround(sum + out[c]);
  }
  const inv = fround(1 / sum);
  for (let c = 0; c < count; c++) out[c] = fround(out[c] * inv);
}

/**
 * Mask2Former's panoptic merge, as rapsam.postprocess.panoptic_merge.
 * maskLogits: Float32Array [n, H, W] (already upsampled to the image); classLogits: [n, C + 1], last column
 * no-object; isThing: length C. Returns { segmentMap: Int32Array [H * W] (0 void, ids 1..S), segments:
 * [{ id, classId, score, isThing, area, queries }] } in id order.
 * A query is kept if its argmax class is not no-object and its class score is > objectMaskThreshold (compared
 * in float32, as torch does with a Python scalar). Each pixel goes to the kept query with the highest
 * score * sigmoid(mask) (first index on ties). Kept queries are visited in index order; one is painted on
 * the pixels it wins where sigmoid >= 0.5 if it wins pixels, has a non-empty sigmoid >= 0.5 area, that
 * intersection is non-empty, and won / (sigmoid >= 0.5 area) >= overlapThreshold. Stuff queries of one class
 * share a segment (score: the highest of them); each thing query is its own segment.
 */
export function panopticMerge(maskLogits, classLogits, n, numClassesPlusOne, H, W, isThing, thresholds = DEFAULT_THRESHOLDS) {
  const numClasses = numClassesPlusOne - 1;
  const plane = H * W;
  if (maskLogits.length < n * plane || classLogits.length < n * numClassesPlusOne || isThing.length !== numClasses) {
    throw new RangeError(`mask_logits (${maskLogits.length} values for ${n}x${H}x${W}), class_logits ` +
      `(${classLogits.length} values for ${n}x${numClassesPlusOne}) and is_thing (len ${isThing.length}) disagree`);
  }
  const objectMaskThreshold = fround(thresholds.objectMaskThreshold ?? DEFAULT_THRESHOLDS.objectMaskThreshold);
  const overlapThreshold = thresholds.overlapThreshold ?? DEFAULT_THRESHOLDS.overlapThreshold;

  // softmax, max over classes (first index on ties), keep
  const probs = new Float32Array(numClassesPlusOne);
  const keptQuery = [];
  const keptScore = [];
  const keptLabel = [];
  for (let q = 0; q < n; q++) {
    softmaxRow(classLogits, q * numClassesPlusOne, numClassesPlusOne, probs);
    let label = 0;
    for (let c = 1; c < numClassesPlusOne; c++) if (probs[c] > probs[label]) label = c;
    const score = probs[label];
    if (label !== numClasses && score > objectMaskThreshold) {
      keptQuery.push(q);
      keptScore.push(score);
      keptLabel.push(label);
    }
  }
  const segmentMap = new Int32Array(plane);
  const Q = keptQuery.length;
  if (Q === 0) return { segmentMap, segments: [] };

  // One pass over the pixels: owner (argmax of score * sigmoid), whether the owner's sigmoid >= 0.5 there,
  // and per kept query: won area, sigmoid >= 0.5 area, region (won and inside) area.
  const owner = new Uint16Array(plane);
  const ownerInside = new Uint8Array(plane);
  const wonArea = new Float64Array(Q);
  const insideArea = new Float64Array(Q);
  const regionArea = new Float64Array(Q);
  const scores = Float32Array.from(keptScore);
  const offsets = Int32Array.from(keptQuery, (q) => q * plane);
  for (let p = 0; p < plane; p++) {
    let best = -Infinity;
    let bestK = 0;
    let bestInside = 0;
    for (let k = 0; k < Q; k++) {
      const s = sigmoid32(maskLogits[offsets[k] + p]);
      const inside = s >= 0.5 ? 1 : 0;
      insideArea[k] += inside;
      const v = fround(scores[k] * s);
      if (v > best) {
        best = v;
        bestK = k;
        bestInside = inside;
      }
    }
    owner[p] = bestK;
    ownerInside[p] = bestInside;
    wonArea[bestK] += 1;
    regionArea[bestK] += bestInside;
  }

  const segments = [];
  const stuffIds = new Map();
  const segmentOf = new Int32Array(Q); // segment id painted for each kept query, 0 if none
  for (let k = 0; k < Q; k++) {
    const classId = keptLabel[k];
    if (wonArea[k] === 0 || insideArea[k] === 0 || regionArea[k] === 0) continue;
    if (wonArea[k] / insideArea[k] < overlapThreshold) continue;
    const score = scores[k];
    const thing = Boolean(isThing[classId]);
    let segmentId;
    if (!thing && stuffIds.has(classId)) {
      segmentId = stuffIds.get(classId);
      const old = segments[segmentId - 1];
      old.score = Math.max(old.score, score);
      old.area += regionArea[k];
      old.queries.push(keptQuery[k]);
    } else {
      segmentId = segments.length + 1;
      if (!thing) stuffIds.set(classId, segmentId);
      segments.push({ id: segmentId, classId, score, isThing: thing, area: regionArea[k], queries: [keptQuery[k]] });
    }
    segmentOf[k] = segmentId;
  }
  for (let p = 0; p < plane; p++) {
    if (ownerInside[p]) {
      const id = segmentOf[owner[p]];
      if (id) segmentMap[p] = id;
    }
  }
  return { segmentMap, segments };
}

/**
 * One binary mask per prompt at image resolution, as prompt_masks: maskLogits [K, h, w], iou [K].
 * Logits are upsampled with upsampleMaskLogits and thresholded as logits > maskThreshold (float32 compare).
 * `valid` (optional, length K): booleans, or the prompt kinds (padding slots have kind -1); slots that are
 * not valid are dropped. Returns { masks: Uint8Array[] (imageH * imageW, 1 inside), iou: number[],
 * index: number[] (the slot of each mask) }.
 */
export function promptMasks(maskLogits, iou, k, h, w, box, maskThreshold = 0, valid = null) {
  const index = [];
  for (let i = 0; i < k; i++) {
    const v = valid == null ? true : valid[i];
    if (typeof v === "number" ? v >= 0 : Boolean(v)) index.push(i);
  }
  const plane = h * w;
  let logits = maskLogits;
  if (index.length !== k) {
    logits = new Float32Array(index.length * plane);
    index.forEach((slot, j) => logits.set(maskLogits.subarray(slot * plane, (slot + 1) * plane), j * plane));
  }
  const up = upsampleMaskLogits(logits, index.length, h, w, box);
  const [imageH, imageW] = box.imageSize;
  const size = imageH * imageW;
  const threshold = fround(maskThreshold);
  const masks = index.map((_, j) => {
    const mask = new Uint8Array(size);
    const o = j * size;
    for (let p = 0; p < size; p++) mask[p] = up[o + p] > threshold ? 1 : 0;
    return mask;
  });
  return { masks, iou: index.map((slot) => fround(iou[slot])), index };
}

// ----------------------------------------------------------------------------- prompts

/**
 * Clicks [x, y] and boxes [x0, y0, x1, y1] in image pixels -> { boxes: Float32Array [1, K, 4], kinds:
 * Int32Array [K] } (points first, then boxes), as prompts_to_boxes: in the export contract's frame (the image
 * stretched to the model input), a click as a box of +-CLICK_HALF_SIZE pixels of the resized image, stretched
 * likewise. Kinds: 0 point, 1 box.
 */
export function promptsToBoxes(points, boxes, box) {
  const [height, width] = box.imageSize;
  const rows = [];
  for (const p of points) {
    if (p.length !== 2) throw new RangeError(`a point is (x, y), got ${p.length} values`);
    const [x, y] = p;
    if (!(0 <= x && x <= width && 0 <= y && y <= height)) {
      throw new RangeError(`point (${x}, ${y}) lies outside the ${width}x${height} image`);
    }
    rows.push([x, y, x, y]);
  }
  for (const b of boxes) {
    if (b.length !== 4) throw new RangeError(`a box is (x0, y0, x1, y1), got ${b.length} values`);
    const [x0, y0, x1, y1] = b;
    if (!(0 <= x0 && x0 < x1 && x1 <= width && 0 <= y0 && y0 < y1 && y1 <= height)) {
      throw new RangeError(`box (${x0}, ${y0}, ${x1}, ${y1}) is empty or outside the ${width}x${height} image`);
    }
    rows.push([x0, y0, x1, y1]);
  }
  if (rows.length === 0) throw new RangeError("give at least one point or box");
  const [inH, inW] = box.inputSize;
  const [validH, validW] = box.validSize;
  const stretch = [fround(inW / width), fround(inH / height)];
  const half = [fround(CLICK_HALF_SIZE * fround(inW / validW)), fround(CLICK_HALF_SIZE * fround(inH / validH))];
  const out = new Float32Array(rows.length * 4);
  const kinds = new Int32Array(rows.length);
  rows.forEach((row, i) => {
    for (let j = 0; j < 4; j++) {
      let v = fround(fround(row[j]) * stretch[j % 2]);
      if (i < points.length) v = fround(v + (j < 2 ? -half[j % 2] : half[j % 2]));
      out[i * 4 + j] = v;
    }
    kinds[i] = i < points.length ? POINT : BOX;
  });
  return { boxes: out, kinds };
}

/**
 * Prompts packed `slots` at a time into an artifact's K prompt slots, as pipeline.prompt: each chunk
 * { boxes: Float32Array [slots * 4], kinds: Int32Array [slots], count, first } holds prompts first..first+count-1,
 * the remaining slots padding (zero box, kind -1). slots null/0: all prompts in one chunk.
 */
export function packPrompts(boxes, kinds, slots) {
  const count = kinds.length;
  if (boxes.length !== count * 4) throw new RangeError(`${boxes.length / 4} boxes but ${count} kinds`);
  const size = slots || count;
  const chunks = [];
  for (let first = 0; first < count; first += size) {
    const n = Math.min(size, count - first);
    const chunkBoxes = new Float32Array(size * 4);
    chunkBoxes.set(boxes.subarray(first * 4, (first + n) * 4));
    const chunkKinds = new Int32Array(size).fill(PADDING);
    chunkKinds.set(kinds.subarray(first, first + n));
    chunks.push({ boxes: chunkBoxes, kinds: chunkKinds, count: n, first });
  }
  return chunks;
}

// ----------------------------------------------------------------------------- video

/**
 * Minimum-cost assignment of a [nRows, nCols] cost matrix (Float64Array or any array, row-major), as
 * scipy.optimize.linear_sum_assignment: the smaller side is fully matched. Shortest augmenting paths with
 * potentials (Jonker-Volgenant / Kuhn-Munkres), O(n^2 m). Returns { rows, cols } (Int32Array, rows ascending).
 * With tied optima the pairs may differ from scipy's; the total cost is the same.
 */
export function linearSumAssignment(cost, nRows, nCols) {
  for (let i = 0; i < nRows * nCols; i++) {
    if (Number.isNaN(cost[i]) || cost[i] === -Infinity) throw new RangeError("cost matrix is invalid (NaN or -inf)");
  }
  const transposed = nRows > nCols;
  const n = transposed ? nCols : nRows; // rows of the working problem, n <= m
  const m = transposed ? nRows : nCols;
  const at = transposed ? (i, j) => cost[j * nCols + i] : (i, j) => cost[i * nCols + j];
  // 1-based arrays; p[j]: row assigned to column j (0 none); way: predecessor column on the path.
  const u = new Float64Array(n + 1);
  const v = new Float64Array(m + 1);
  const p = new Int32Array(m + 1);
  const way = new Int32Array(m + 1);
  const minv = new Float64Array(m + 1);
  const used = new Uint8Array(m + 1);
  for (let i = 1; i <= n; i++) {
    p[0] = i;
    let j0 = 0;
    minv.fill(Infinity);
    used.fill(0);
    do {
      used[j0] = 1;
      const i0 = p[j0];
      let delta = Infinity;
      let j1 = -1;
      for (let j = 1; j <= m; j++) {
        if (used[j]) continue;
        const cur = at(i0 - 1, j - 1) - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      if (j1 < 0 || delta === Infinity) throw new RangeError("cost matrix is infeasible");
      for (let j = 0; j <= m; j++) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] !== 0);
    do {
      const j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 !== 0);
  }
  const pairs = [];
  for (let j = 1; j <= m; j++) {
    if (p[j] !== 0) pairs.push(transposed ? [j - 1, p[j] - 1] : [p[j] - 1, j - 1]);
  }
  pairs.sort((a, b) => a[0] - b[0]);
  return { rows: Int32Array.from(pairs, (x) => x[0]), cols: Int32Array.from(pairs, (x) => x[1]) };
}

/** F.normalize(x, dim=-1) of [n, d] float32: x / max(||x||, 1e-12), rounded to float32. */
function normalizeRows(queries, n, d) {
  const out = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    let sq = 0;
    for (let j = 0; j < d; j++) sq += queries[i * d + j] * queries[i * d + j];
    const norm = Math.max(fround(Math.sqrt(sq)), 1e-12);
    for (let j = 0; j < d; j++) out[i * d + j] = fround(queries[i * d + j] / norm);
  }
  return out;
}

/**
 * Instance ids across video frames by matching object queries (MinVIS style), as rapsam's QueryTracker:
 * queries of frame t are matched one-to-one to those of frame t-1 by minimum-cost assignment on
 * 1 - cosine similarity, over all queries alive or not; an alive query matched to a query alive at t-1 keeps
 * its id; other alive queries get new ids in increasing query index from a counter that never goes back;
 * queries not alive get -1. Only the previous frame is remembered.
 */
export class QueryTracker {
  constructor() {
    this.reset();
  }

  /** Start a new video: no previous frame, next id 0. */
  reset() {
    this._prevQueries = null;
    this._prevN = 0;
    this._prevD = 0;
    this._prevIds = null;
    this._nextId = 0;
  }

  /** queries: Float32Array [n * d]; alive: booleans [n] -> Int32Array [n] ids, -1 where not alive. */
  update(queries, n, d, alive) {
    if (queries.length < n * d || alive.length < n) throw new RangeError(`expected ${n}x${d} queries and ${n} alive flags`);
    const q = normalizeRows(queries, n, d);
    const inherited = new Int32Array(n).fill(-1);
    if (this._prevQueries !== null) {
      if (d !== this._prevD) throw new RangeError(`query size ${d} differs from the previous frame's ${this._prevD}`);
      const m = this._prevN;
      const prev = this._prevQueries;
      const cost = new Float64Array(n * m);
      for (let i = 0; i < n; i++) {
        for (let j = 0; j < m; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[i * d + c] * prev[j * d + c];
          cost[i * m + j] = fround(1 - fround(dot));
        }
      }
      const { rows, cols } = linearSumAssignment(cost, n, m);
      for (let i = 0; i < rows.length; i++) inherited[rows[i]] = this._prevIds[cols[i]];
    }
    const ids = new Int32Array(n);
    for (let i = 0; i < n; i++) ids[i] = alive[i] ? inherited[i] : -1;
    for (let i = 0; i < n; i++) {
      if (alive[i] && ids[i] < 0) ids[i] = this._nextId++;
    }
    this._prevQueries = q;
    this._prevN = n;
    this._prevD = d;
    this._prevIds = ids;
    return ids;
  }
}

/**
 * The video-wide id of each segment of one frame's panoptic result (-1 for stuff), from its object queries
 * [n, d]: the queries behind thing segments are the alive ones (as postprocess.instance_ids).
 */
export function instanceIds(tracker, result, queries, n, d) {
  const alive = new Array(n).fill(false);
  for (const segment of result.segments) {
    if (segment.isThing) for (const q of segment.queries) alive[q] = true;
  }
  const ids = tracker.update(queries, n, d, alive);
  return result.segments.map((segment) => (segment.isThing ? ids[segment.queries[0]] : -1));
}
