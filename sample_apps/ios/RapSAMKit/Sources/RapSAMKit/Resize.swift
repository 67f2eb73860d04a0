// Resizing as PyTorch does it, bit for bit: `F.interpolate(mode="bilinear", align_corners=False)` and the
// letterbox of rapsam/inference.py. A port of sample_apps/web/src/pipeline.js (same names, same steps).
//
// Swift's Float arithmetic is IEEE float32 with round-to-nearest, which is what the JS port emulates with
// Math.fround; the compiler never contracts a * b + c into an FMA, so the FMAs PyTorch's kernels make
// are written out explicitly with fma32.

import Foundation

/// Python's round() for floats: round half to even.
public func roundHalfEven(_ value: Double) -> Double {
    value.rounded(.toNearestOrEven)
}

/// float32 fused multiply-add a * b + c, rounded once, as the hardware FMA of PyTorch's CPU kernels.
@inline(__always)
func fma32(_ a: Float, _ b: Float, _ c: Float) -> Float {
    c.addingProduct(a, b)  // IEEE fusedMultiplyAdd: one rounding
}

/// Source indices and weights of one axis.
struct AxisWeights {
    var i0: [Int]
    var i1: [Int]
    var w0: [Float]
    var w1: [Float]
}

/// As ATen's `compute_indices_weights` for linear interpolation (align_corners=False, no scale factor):
/// scale = float(in) / out, src = fma(scale, dst + 0.5, -0.5) clamped at 0, i0 = min(floor(src), in - 1),
/// i1 = i0 + 1 unless at the border, lambda = clamp(src - i0, 0, 1). Equal sizes copy.
func axisWeights(_ inSize: Int, _ outSize: Int) -> AxisWeights {
    if inSize == outSize {
        return AxisWeights(i0: Array(0..<outSize), i1: Array(0..<outSize),
                           w0: [Float](repeating: 1, count: outSize), w1: [Float](repeating: 0, count: outSize))
    }
    var weights = AxisWeights(i0: [Int](repeating: 0, count: outSize), i1: [Int](repeating: 0, count: outSize),
                              w0: [Float](repeating: 0, count: outSize), w1: [Float](repeating: 0, count: outSize))
    let scale = Float(inSize) / Float(outSize)
    for i in 0..<outSize {
        var src = fma32(scale, Float(i) + 0.5, -0.5)
        if src < 0 { src = 0 }
        let index = min(Int(src.rounded(.down)), inSize - 1)
        let lambda = min(max(src - Float(index), 0), 1)
        weights.i0[i] = index
        weights.i1[i] = index < inSize - 1 ? index + 1 : index
        weights.w1[i] = lambda
        weights.w0[i] = 1 - lambda
    }
    return weights
}

/// torch `F.interpolate(x, size=(dstH, dstW), mode="bilinear", align_corners=False)` (no antialias) of a
/// [channels, srcH, srcW] float32 array, read from rows [0, srcH) and columns [0, srcW) of a source of row
/// length `srcStride` and plane size `srcPlane` (defaults: a dense array, so crops need no copy).
/// Per output pixel, as PyTorch's generic CPU kernel evaluates it:
///   t0 = fma(x[y0,x0], wx0, x[y0,x1] * wx1), t1 likewise on row y1, out = fma(t0, wy0, t1 * wy1).
/// The row interpolations t are cached per source row, which gives the same numbers.
public func bilinearResize(_ src: [Float], channels: Int, srcH: Int, srcW: Int, dstH: Int, dstW: Int,
                           srcStride: Int? = nil, srcPlane: Int? = nil) throws -> [Float] {
    var out = [Float](repeating: 0, count: channels * dstH * dstW)
    if dstH == 0 || dstW == 0 || channels == 0 { return out }
    if srcH <= 0 || srcW <= 0 { throw PipelineError("cannot resize an empty \(srcH)x\(srcW) input") }
    let stride = srcStride ?? srcW
    let plane = srcPlane ?? srcH * stride
    if src.count < (channels - 1) * plane + (srcH - 1) * stride + srcW {
        throw PipelineError("expected \(channels)x\(srcH)x\(srcW) values to resize, got \(src.count)")
    }
    let ax = axisWeights(srcW, dstW)
    let ay = axisWeights(srcH, dstH)
    var rows = [Float](repeating: 0, count: srcH * dstW)  // row interpolations of one channel
    var rowDone = [Bool](repeating: false, count: srcH)
    src.withUnsafeBufferPointer { s in
        rows.withUnsafeMutableBufferPointer { r in
            out.withUnsafeMutableBufferPointer { o in
                for c in 0..<channels {
                    let base = c * plane
                    for y in 0..<srcH { rowDone[y] = false }
                    func rowAt(_ y: Int) -> Int {
                        if !rowDone[y] {
                            let start = base + y * stride
                            let row = y * dstW
                            for x in 0..<dstW {
                                r[row + x] = fma32(s[start + ax.i0[x]], ax.w0[x], s[start + ax.i1[x]] * ax.w1[x])
                            }
                            rowDone[y] = true
                        }
                        return y * dstW
                    }
                    let outBase = c * dstH * dstW
                    for y in 0..<dstH {
                        let r0 = rowAt(ay.i0[y])
                        let r1 = rowAt(ay.i1[y])
                        let wy0 = ay.w0[y]
                        let wy1 = ay.w1[y]
                        let row = outBase + y * dstW
                        for x in 0..<dstW {
                            o[row + x] = fma32(r[r0 + x], wy0, r[r1 + x] * wy1)
                        }
                    }
                }
            }
        }
    }
    return out
}

/// RGBA pixels (rows of width * 4 bytes, as a CGContext of CGImageAlphaInfo.premultipliedLast or a
/// swizzled camera buffer holds them) -> (tensor [1, 3, inputH, inputW] RGB 0..255 float32, box).
/// The image is resized keeping its aspect ratio to validSize = (max(1, round(h * s)), max(1, round(w * s)))
/// with s = min(inputH / h, inputW / w) (Python round: half to even) and padded bottom/right with `padValue`.
/// `inputSize` is [height, width], as in the manifest.
public func letterbox(_ rgba: [UInt8], width: Int, height: Int, inputSize: [Int],
                      padValue: [Float]) throws -> (tensor: [Float], box: Letterbox) {
    guard width >= 1, height >= 1 else { throw PipelineError("image has an empty side: \(height)x\(width)") }
    guard rgba.count >= width * height * 4 else {
        throw PipelineError("expected \(width * height * 4) RGBA values for a \(width)x\(height) image, got \(rgba.count)")
    }
    guard inputSize.count == 2, padValue.count == 3 else {
        throw PipelineError("input size is [height, width] and pad value [r, g, b]")
    }
    let inH = inputSize[0], inW = inputSize[1]
    let scale = min(Double(inH) / Double(height), Double(inW) / Double(width))
    let validH = max(1, Int(roundHalfEven(Double(height) * scale)))
    let validW = max(1, Int(roundHalfEven(Double(width) * scale)))
    let plane = width * height
    var rgb = [Float](repeating: 0, count: 3 * plane)
    rgba.withUnsafeBufferPointer { p in
        for i in 0..<plane {
            rgb[i] = Float(p[4 * i])
            rgb[plane + i] = Float(p[4 * i + 1])
            rgb[2 * plane + i] = Float(p[4 * i + 2])
        }
    }
    let resized = try bilinearResize(rgb, channels: 3, srcH: height, srcW: width, dstH: validH, dstW: validW)
    var tensor = [Float](repeating: 0, count: 3 * inH * inW)
    for c in 0..<3 {
        let o = c * inH * inW
        for i in o..<(o + inH * inW) { tensor[i] = padValue[c] }
        for y in 0..<validH {
            let s = (c * validH + y) * validW
            tensor.replaceSubrange((o + y * inW)..<(o + y * inW + validW), with: resized[s..<(s + validW)])
        }
    }
    let box = Letterbox(imageH: height, imageW: width, validH: validH, validW: validW, inputH: inH, inputW: inW)
    return (tensor, box)
}
