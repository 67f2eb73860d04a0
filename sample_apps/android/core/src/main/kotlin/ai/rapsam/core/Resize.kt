// Pre-processing of RAP-SAM on Android: letterbox and torch's bilinear resize, a port of
// sample_apps/web/src/pipeline.js (itself an exact port of rapsam/inference.py `letterbox` and torch's
// `F.interpolate(mode="bilinear", align_corners=False)`). Pure Kotlin, no Android classes, so it runs in JVM tests.
//
// Tensors are flat row-major FloatArrays. Float (float32) arithmetic is used where PyTorch computes in float32
// and the JS port rounds with Math.fround; Double where the reference uses Python floats.

package ai.rapsam.core

import kotlin.math.floor
import kotlin.math.max
import kotlin.math.min

/** Python's round() for floats: round half to even. */
fun roundHalfEven(value: Double): Double {
    val lower = floor(value)
    val diff = value - lower
    return when {
        diff < 0.5 -> lower
        diff > 0.5 -> lower + 1
        lower % 2.0 == 0.0 -> lower
        else -> lower + 1
    }
}

/**
 * float32 fused multiply-add fl32(a * b + c), rounded once, as PyTorch's CPU kernels (compiled with FMA
 * contraction) compute the bilinear weights and blends. java.lang.Math.fma is a true FMA on every JVM, but Android
 * has it only from API 33 (Android 13): below that the exact emulation [fma32Emulated] runs instead.
 */
fun fma32(a: Float, b: Float, c: Float): Float = if (HAS_MATH_FMA) Math.fma(a, b, c) else fma32Emulated(a, b, c)

private val HAS_MATH_FMA: Boolean = try {
    Math.fma(1f, 1f, 1f) == 2f
} catch (e: LinkageError) { // NoSuchMethodError on Android before API 33
    false
}

/**
 * fl32(a * b + c) in double arithmetic, as the JS port: a * b is exact in double; the double sum rounded again to
 * float32 can only go wrong when it lands exactly on a float32 midpoint, and then the exact error of the sum
 * (TwoSum) decides the side.
 */
internal fun fma32Emulated(a: Float, b: Float, c: Float): Float {
    val p = a.toDouble() * b
    val s = p + c
    val r = s.toFloat()
    val d = s - r
    if (d != 0.0) {
        val other = r + 2 * d
        if (other.toFloat().toDouble() == other) { // s is halfway between the float32 values r and other
            val bv = s - p
            val err = (p - (s - bv)) + (c - bv)
            if (err != 0.0 && (err > 0) == (d > 0)) return other.toFloat()
        }
    }
    return r
}

/** Source indices and weights of one axis of a linear resize. */
internal class AxisWeights(val i0: IntArray, val i1: IntArray, val w0: FloatArray, val w1: FloatArray)

/**
 * As ATen's `compute_indices_weights` for linear interpolation (align_corners=False, no scale factor given):
 * scale = float(in) / out, src = fma(scale, dst + 0.5, -0.5) clamped at 0, i0 = min(floor(src), in - 1),
 * i1 = i0 + 1 unless at the border, lambda = clamp(src - i0, 0, 1). Equal sizes copy.
 */
internal fun axisWeights(inSize: Int, outSize: Int): AxisWeights {
    val i0 = IntArray(outSize)
    val i1 = IntArray(outSize)
    val w0 = FloatArray(outSize)
    val w1 = FloatArray(outSize)
    if (inSize == outSize) {
        for (i in 0 until outSize) {
            i0[i] = i
            i1[i] = i
            w0[i] = 1f
        }
        return AxisWeights(i0, i1, w0, w1)
    }
    // The Python float quotient rounded to float32 (not a float32 division): what torch hands its kernel.
    val scale = (inSize.toDouble() / outSize).toFloat()
    for (i in 0 until outSize) {
        val src = max(fma32(scale, (i + 0.5).toFloat(), -0.5f), 0f)
        val index = min(floor(src).toInt(), inSize - 1)
        val lambda = (src - index).coerceIn(0f, 1f)
        i0[i] = index
        i1[i] = if (index < inSize - 1) index + 1 else index
        w1[i] = lambda
        w0[i] = 1f - lambda
    }
    return AxisWeights(i0, i1, w0, w1)
}

/**
 * torch `F.interpolate(x, size=(dstH, dstW), mode="bilinear", align_corners=False)` (no antialias) of a
 * [channels, srcH, srcW] float32 array, read from rows [0, srcH) and columns [0, srcW) of a source of row
 * length [srcStride] and plane size [srcPlane] (defaults: a dense array, so crops need no copy).
 * Per output pixel, as PyTorch's generic CPU kernel evaluates it:
 *   t0 = fma(x[y0,x0], wx0, x[y0,x1] * wx1), t1 likewise on row y1, out = fma(t0, wy0, t1 * wy1).
 * The row interpolations t are cached per source row, which gives the same numbers.
 */
fun bilinearResize(
    src: FloatArray, channels: Int, srcH: Int, srcW: Int, dstH: Int, dstW: Int,
    srcStride: Int = srcW, srcPlane: Int = srcH * srcStride,
): FloatArray {
    val out = FloatArray(channels * dstH * dstW)
    if (dstH == 0 || dstW == 0 || channels == 0) return out
    require(srcH > 0 && srcW > 0) { "cannot resize an empty ${srcH}x$srcW input" }
    require(src.size >= (channels - 1) * srcPlane + (srcH - 1) * srcStride + srcW) {
        "expected $channels planes of ${srcH}x$srcW values, got ${src.size} values"
    }
    val ax = axisWeights(srcW, dstW)
    val ay = axisWeights(srcH, dstH)
    val rows = FloatArray(srcH * dstW) // row interpolations of one channel
    val rowDone = BooleanArray(srcH)
    for (c in 0 until channels) {
        val base = c * srcPlane
        rowDone.fill(false)
        fun rowAt(y: Int): Int {
            val o = y * dstW
            if (!rowDone[y]) {
                val s = base + y * srcStride
                for (x in 0 until dstW) {
                    rows[o + x] = fma32(src[s + ax.i0[x]], ax.w0[x], src[s + ax.i1[x]] * ax.w1[x])
                }
                rowDone[y] = true
            }
            return o
        }
        val outBase = c * dstH * dstW
        for (y in 0 until dstH) {
            val r0 = rowAt(ay.i0[y])
            val r1 = rowAt(ay.i1[y])
            val wy0 = ay.w0[y]
            val wy1 = ay.w1[y]
            val o = outBase + y * dstW
            for (x in 0 until dstW) out[o + x] = fma32(rows[r0 + x], wy0, rows[r1 + x] * wy1)
        }
    }
    return out
}

/** How an image of imageH x imageW sits in the model input: scaled to validH x validW, padded to inputH x inputW. */
data class Letterbox(
    val imageH: Int, val imageW: Int,
    val validH: Int, val validW: Int,
    val inputH: Int, val inputW: Int,
)

/** The letterboxed [1, 3, inputH, inputW] RGB 0..255 tensor and where the image sits in it. */
class LetterboxResult(val tensor: FloatArray, val box: Letterbox)

/**
 * Pixels in Android's `Bitmap.getPixels` layout (one 0xAARRGGBB Int per pixel, row-major; alpha ignored) ->
 * NCHW RGB 0..255. The image is resized keeping its aspect ratio to (max(1, round(h * s)), max(1, round(w * s)))
 * with s = min(inputH / h, inputW / w) (Python round: half to even) and padded bottom/right with [padValue].
 */
fun letterbox(argb: IntArray, width: Int, height: Int, inputH: Int, inputW: Int, padValue: FloatArray): LetterboxResult {
    require(width >= 1 && height >= 1) { "image has an empty side: ${height}x$width" }
    require(argb.size >= width * height) { "expected ${width * height} pixels for a ${width}x$height image, got ${argb.size}" }
    require(padValue.size == 3) { "pad value is [r, g, b], got ${padValue.size} values" }
    val scale = min(inputH.toDouble() / height, inputW.toDouble() / width)
    val validH = max(1, roundHalfEven(height * scale).toInt())
    val validW = max(1, roundHalfEven(width * scale).toInt())
    val plane = width * height
    val rgb = FloatArray(3 * plane)
    for (i in 0 until plane) {
        val p = argb[i]
        rgb[i] = ((p shr 16) and 0xFF).toFloat()
        rgb[plane + i] = ((p shr 8) and 0xFF).toFloat()
        rgb[2 * plane + i] = (p and 0xFF).toFloat()
    }
    val resized = bilinearResize(rgb, 3, height, width, validH, validW)
    val tensor = FloatArray(3 * inputH * inputW)
    for (c in 0 until 3) {
        val o = c * inputH * inputW
        tensor.fill(padValue[c], o, o + inputH * inputW)
        for (y in 0 until validH) {
            val s = (c * validH + y) * validW
            resized.copyInto(tensor, o + y * inputW, s, s + validW)
        }
    }
    return LetterboxResult(tensor, Letterbox(height, width, validH, validW, inputH, inputW))
}
