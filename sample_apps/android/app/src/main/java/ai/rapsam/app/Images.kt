// Pictures in and out of the pipeline: the core takes Bitmap.getPixels ARGB arrays of an upright image.

package ai.rapsam.app

import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.ImageDecoder
import android.graphics.Matrix
import android.graphics.Paint
import android.media.ExifInterface
import android.net.Uri
import android.os.Build
import kotlin.math.max
import kotlin.math.roundToInt

object Images {
    /**
     * Photos are scaled to at most this many pixels on their long side: the panoptic merge and the prompt masks
     * run at image resolution (as the Python reference does), so a 12 MP photo would cost seconds for no gain.
     */
    const val MAX_SIDE = 1024

    /** An upright, software ARGB_8888 bitmap of the picture at [uri], at most [MAX_SIDE] on its long side. */
    fun decode(context: Context, uri: Uri): Bitmap =
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
            // ImageDecoder applies the EXIF orientation itself; a software bitmap so that getPixels works.
            ImageDecoder.decodeBitmap(ImageDecoder.createSource(context.contentResolver, uri)) { decoder, info, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
                val scale = MAX_SIDE.toFloat() / max(info.size.width, info.size.height)
                if (scale < 1f) {
                    decoder.setTargetSize(
                        (info.size.width * scale).roundToInt().coerceAtLeast(1),
                        (info.size.height * scale).roundToInt().coerceAtLeast(1),
                    )
                }
            }.let { if (it.config == Bitmap.Config.ARGB_8888) it else it.copy(Bitmap.Config.ARGB_8888, false) }
        } else {
            decodeLegacy(context, uri)
        }

    /** API 26-27: BitmapFactory with a power-of-two subsample, then the EXIF rotation and an exact downscale. */
    private fun decodeLegacy(context: Context, uri: Uri): Bitmap {
        val resolver = context.contentResolver
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        resolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, bounds) }
        var sample = 1
        while (max(bounds.outWidth, bounds.outHeight) / (sample * 2) >= MAX_SIDE) sample *= 2
        val options = BitmapFactory.Options().apply {
            inSampleSize = sample
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }
        val decoded = resolver.openInputStream(uri).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IllegalArgumentException("cannot decode $uri")
        val degrees = resolver.openInputStream(uri).use { stream ->
            if (stream == null) {
                0
            } else {
                when (ExifInterface(stream).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)) {
                    ExifInterface.ORIENTATION_ROTATE_90 -> 90
                    ExifInterface.ORIENTATION_ROTATE_180 -> 180
                    ExifInterface.ORIENTATION_ROTATE_270 -> 270
                    else -> 0
                }
            }
        }
        return fit(upright(decoded, degrees))
    }

    /** [bitmap] scaled down to at most [MAX_SIDE] on its long side (unchanged if it already fits). */
    fun fit(bitmap: Bitmap): Bitmap {
        val scale = MAX_SIDE.toFloat() / max(bitmap.width, bitmap.height)
        if (scale >= 1f) return bitmap
        val w = (bitmap.width * scale).roundToInt().coerceAtLeast(1)
        val h = (bitmap.height * scale).roundToInt().coerceAtLeast(1)
        return Bitmap.createScaledBitmap(bitmap, w, h, true)
    }

    /** [bitmap] rotated clockwise by [degrees] (CameraX's ImageInfo.rotationDegrees, EXIF orientation). */
    fun upright(bitmap: Bitmap, degrees: Int): Bitmap {
        if (degrees % 360 == 0) return bitmap
        val matrix = Matrix().apply { postRotate(degrees.toFloat()) }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, matrix, true)
    }

    /** The pixels the core takes: ARGB ints, row-major, width * height. */
    fun pixels(bitmap: Bitmap): IntArray =
        IntArray(bitmap.width * bitmap.height).also { bitmap.getPixels(it, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height) }

    /**
     * A stand-in picture for the benchmark when the artifact carries no test vectors: latency does not depend on
     * what the picture shows, only on its size (a disc, a bar and gradients, so the merge has regions to paint).
     */
    fun synthetic(width: Int = 640, height: Int = 480): Bitmap {
        val bitmap = Bitmap.createBitmap(width, height, Bitmap.Config.ARGB_8888)
        val canvas = Canvas(bitmap)
        val paint = Paint(Paint.ANTI_ALIAS_FLAG)
        for (y in 0 until height step 8) {
            paint.color = Color.rgb(40, 255 * y / height, 160)
            canvas.drawRect(0f, y.toFloat(), width.toFloat(), (y + 8).toFloat(), paint)
        }
        paint.color = Color.rgb(220, 40, 40)
        canvas.drawCircle(width / 3f, height / 2f, height / 4f, paint)
        paint.color = Color.rgb(240, 220, 60)
        canvas.drawRect(width * 0.6f, height * 0.2f, width * 0.85f, height * 0.8f, paint)
        return bitmap
    }
}
