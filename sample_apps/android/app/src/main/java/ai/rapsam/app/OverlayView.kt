// Draws the pipeline's results over the camera preview or the photo: the panoptic segments in the manifest's class
// colours with class names (and track ids on camera frames), a legend, and the prompt masks with their predicted
// IoU. On photos it also turns gestures into prompts: a tap is a point prompt, a drag a box prompt.

package ai.rapsam.app

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Canvas
import android.graphics.Color
import android.graphics.Matrix
import android.graphics.Paint
import android.graphics.PointF
import android.graphics.RectF
import android.util.AttributeSet
import android.view.MotionEvent
import android.view.View
import android.view.ViewConfiguration
import ai.rapsam.core.Manifest
import ai.rapsam.core.PanopticResult
import androidx.core.graphics.withMatrix
import kotlin.math.hypot
import kotlin.math.max
import kotlin.math.min

/** One image's panoptic overlay, built off the UI thread by [renderPanoptic]. */
class PanopticLayer(val bitmap: Bitmap, val labels: List<Label>, val legend: List<LegendEntry>) {
    /** A segment's name at its centroid, in image pixels. */
    class Label(val x: Float, val y: Float, val text: String)
    class LegendEntry(val color: Int, val text: String)
}

/** One prompt's mask (image size) and where it was given, in image pixels: a point [x, y] or a box [x0, y0, x1, y1]. */
class PromptMark(val mask: Bitmap, val color: Int, val iou: Float, val point: FloatArray?, val box: FloatArray?)

private const val SEGMENT_ALPHA = 120
private const val PROMPT_ALPHA = 150

/**
 * Colours each pixel by its segment's class (manifest colours), labels segments covering at least 0.3% of the
 * image ("person #3": class and track id, [ids] from Pipeline.trackFrame; null for photos) and lists the classes
 * present, largest first, for the legend.
 */
fun renderPanoptic(result: PanopticResult, ids: IntArray?, manifest: Manifest, width: Int, height: Int): PanopticLayer {
    val segments = result.segments
    val colors = IntArray(segments.size + 1) // index = segment id; 0 is void, left transparent
    segments.forEach { s ->
        val c = manifest.classes[s.classId].color
        colors[s.id] = Color.argb(SEGMENT_ALPHA, c[0], c[1], c[2])
    }
    val sumX = DoubleArray(segments.size + 1)
    val sumY = DoubleArray(segments.size + 1)
    val pixels = IntArray(width * height)
    val map = result.segmentMap
    for (y in 0 until height) {
        for (x in 0 until width) {
            val id = map[y * width + x]
            pixels[y * width + x] = colors[id]
            sumX[id] += x.toDouble()
            sumY[id] += y.toDouble()
        }
    }
    val minArea = width * height * 0.003
    val labels = segments.mapIndexedNotNull { i, s ->
        if (s.area < minArea) return@mapIndexedNotNull null
        val name = manifest.classes[s.classId].name
        val id = ids?.getOrNull(i) ?: -1
        PanopticLayer.Label((sumX[s.id] / s.area).toFloat(), (sumY[s.id] / s.area).toFloat(), if (id >= 0) "$name #$id" else name)
    }
    val legend = segments.groupBy { it.classId }
        .entries.sortedByDescending { (_, list) -> list.sumOf { it.area } }
        .take(8)
        .map { (classId, _) ->
            val c = manifest.classes[classId]
            PanopticLayer.LegendEntry(Color.rgb(c.color[0], c.color[1], c.color[2]), c.name)
        }
    return PanopticLayer(Bitmap.createBitmap(pixels, width, height, Bitmap.Config.ARGB_8888), labels, legend)
}

/** A prompt's mask as a translucent bitmap in [color]. */
fun renderMask(mask: BooleanArray, width: Int, height: Int, color: Int): Bitmap {
    val fill = Color.argb(PROMPT_ALPHA, Color.red(color), Color.green(color), Color.blue(color))
    val pixels = IntArray(width * height) { if (mask[it]) fill else 0 }
    return Bitmap.createBitmap(pixels, width, height, Bitmap.Config.ARGB_8888)
}

/** Distinct colours for successive prompts. */
val PROMPT_COLORS = intArrayOf(
    0xFFFF5252.toInt(), 0xFF40C4FF.toInt(), 0xFFFFD740.toInt(), 0xFF69F0AE.toInt(),
    0xFFE040FB.toInt(), 0xFFFF6E40.toInt(), 0xFF536DFE.toInt(), 0xFFEEFF41.toInt(),
)

class OverlayView @JvmOverloads constructor(context: Context, attrs: AttributeSet? = null) : View(context, attrs) {

    /** Gestures become prompts only on a photo (there is nothing to prompt on a moving camera frame). */
    var promptsEnabled = false

    /** Called with a point [x, y] or a box [x0, y0, x1, y1] in image pixels. */
    var onPrompt: ((point: FloatArray?, box: FloatArray?) -> Unit)? = null

    private var imageW = 0
    private var imageH = 0
    private var panoptic: PanopticLayer? = null
    private val prompts = ArrayList<PromptMark>()

    // The image is drawn fit-centre, as PreviewView (scaleType fitCenter) and ImageView (fitCenter) draw it.
    private val toView = Matrix()
    private val toImage = Matrix()

    private val density = resources.displayMetrics.density
    private val touchSlop = ViewConfiguration.get(context).scaledTouchSlop
    private val bitmapPaint = Paint(Paint.FILTER_BITMAP_FLAG)
    private val textPaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        color = Color.WHITE
        textSize = 13 * density
        setShadowLayer(3 * density, 0f, 0f, Color.BLACK)
    }
    private val panelPaint = Paint().apply { color = 0xAA000000.toInt() }
    private val fillPaint = Paint()
    private val strokePaint = Paint(Paint.ANTI_ALIAS_FLAG).apply {
        style = Paint.Style.STROKE
        strokeWidth = 2 * density
    }
    private var down: PointF? = null
    private var drag: RectF? = null

    /** Show [layer] for an image of [width] x [height] (null clears the segments but keeps the size). */
    fun showPanoptic(layer: PanopticLayer?, width: Int, height: Int) {
        if (width != imageW || height != imageH) {
            imageW = width
            imageH = height
            updateMatrix()
        }
        panoptic = layer
        invalidate()
    }

    fun addPrompt(mark: PromptMark) {
        prompts += mark
        invalidate()
    }

    fun clearPrompts() {
        prompts.clear()
        invalidate()
    }

    fun clear() {
        panoptic = null
        prompts.clear()
        imageW = 0
        imageH = 0
        invalidate()
    }

    override fun onSizeChanged(w: Int, h: Int, oldw: Int, oldh: Int) = updateMatrix()

    private fun updateMatrix() {
        if (imageW == 0 || width == 0) return
        toView.setRectToRect(
            RectF(0f, 0f, imageW.toFloat(), imageH.toFloat()),
            RectF(0f, 0f, width.toFloat(), height.toFloat()),
            Matrix.ScaleToFit.CENTER,
        )
        toView.invert(toImage)
    }

    private fun mapped(matrix: Matrix, x: Float, y: Float): FloatArray = floatArrayOf(x, y).also { matrix.mapPoints(it) }

    override fun onDraw(canvas: Canvas) {
        super.onDraw(canvas)
        if (imageW == 0) return
        canvas.withMatrix(toView) {
            panoptic?.let { drawBitmap(it.bitmap, 0f, 0f, bitmapPaint) }
            prompts.forEach { drawBitmap(it.mask, 0f, 0f, bitmapPaint) }
        }
        panoptic?.labels?.forEach { label ->
            val (x, y) = mapped(toView, label.x, label.y).let { it[0] to it[1] }
            canvas.drawText(label.text, x - textPaint.measureText(label.text) / 2, y, textPaint)
        }
        prompts.forEach { drawPromptMark(canvas, it) }
        drag?.let {
            strokePaint.color = Color.WHITE
            canvas.drawRect(it, strokePaint)
        }
        panoptic?.legend?.let { drawLegend(canvas, it) }
    }

    private fun drawPromptMark(canvas: Canvas, mark: PromptMark) {
        strokePaint.color = mark.color
        val anchor: FloatArray
        if (mark.box != null) {
            val r = RectF(mark.box[0], mark.box[1], mark.box[2], mark.box[3]).also { toView.mapRect(it) }
            canvas.drawRect(r, strokePaint)
            anchor = floatArrayOf(r.left, r.top - 4 * density)
        } else {
            val p = mapped(toView, mark.point!![0], mark.point[1])
            fillPaint.color = mark.color
            canvas.drawCircle(p[0], p[1], 5 * density, fillPaint)
            canvas.drawCircle(p[0], p[1], 5 * density, strokePaint.apply { color = Color.WHITE })
            anchor = floatArrayOf(p[0] + 8 * density, p[1] - 8 * density)
        }
        canvas.drawText("IoU %.2f".format(mark.iou), anchor[0], anchor[1], textPaint)
    }

    private fun drawLegend(canvas: Canvas, legend: List<PanopticLayer.LegendEntry>) {
        if (legend.isEmpty()) return
        val pad = 6 * density
        val row = textPaint.textSize + 4 * density
        val box = textPaint.textSize * 0.8f
        val textW = legend.maxOf { textPaint.measureText(it.text) }
        canvas.drawRect(pad, pad, pad * 3 + box + textW + pad, pad * 2 + row * legend.size, panelPaint)
        legend.forEachIndexed { i, entry ->
            val top = pad * 1.5f + row * i
            fillPaint.color = entry.color
            canvas.drawRect(pad * 2, top, pad * 2 + box, top + box, fillPaint)
            canvas.drawText(entry.text, pad * 3 + box, top + box, textPaint)
        }
    }

    override fun onTouchEvent(event: MotionEvent): Boolean {
        if (!promptsEnabled || imageW == 0) return false
        when (event.actionMasked) {
            MotionEvent.ACTION_DOWN -> {
                down = PointF(event.x, event.y)
                drag = null
            }
            MotionEvent.ACTION_MOVE -> {
                val start = down ?: return false
                if (drag != null || hypot(event.x - start.x, event.y - start.y) > touchSlop) {
                    drag = RectF(min(start.x, event.x), min(start.y, event.y), max(start.x, event.x), max(start.y, event.y))
                    invalidate()
                }
            }
            MotionEvent.ACTION_UP -> {
                val start = down ?: return false
                val rect = drag
                down = null
                drag = null
                invalidate()
                performClick()
                if (rect != null) boxPrompt(rect) else pointPrompt(start.x, start.y)
            }
            MotionEvent.ACTION_CANCEL -> {
                down = null
                drag = null
                invalidate()
            }
        }
        return true
    }

    // Taps and drags are the view's click action; accessibility services get the same through performClick.
    override fun performClick(): Boolean = super.performClick()

    private fun pointPrompt(x: Float, y: Float) {
        val p = mapped(toImage, x, y)
        if (p[0] < 0 || p[1] < 0 || p[0] >= imageW || p[1] >= imageH) return // a tap on the letterbox bars
        onPrompt?.invoke(p, null)
    }

    private fun boxPrompt(rect: RectF) {
        val r = RectF(rect).also { toImage.mapRect(it) }
        val box = floatArrayOf(
            r.left.coerceIn(0f, imageW.toFloat()), r.top.coerceIn(0f, imageH.toFloat()),
            r.right.coerceIn(0f, imageW.toFloat()), r.bottom.coerceIn(0f, imageH.toFloat()),
        )
        if (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) onPrompt?.invoke(null, box)
    }
}
