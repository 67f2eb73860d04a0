// A small JSON reader and writer, so the core reads manifest.json with no dependency (Android's org.json is not on
// the plain JVM where the tests run, and the app needs nothing more).

package ai.rapsam.core

object Json {
    /**
     * Objects as Map<String, Any?> (key order kept), arrays as List<Any?>, numbers as Double, strings, booleans,
     * null. Malformed text: IllegalArgumentException with the character offset.
     */
    fun parse(text: String): Any? {
        val reader = Reader(text)
        reader.skipSpace()
        val value = reader.value()
        reader.skipSpace()
        if (reader.pos != text.length) reader.fail("unexpected '${text[reader.pos]}' after the value")
        return value
    }

    /** Compact JSON of maps, lists, arrays, strings, numbers, booleans and null (for benchmark lines). */
    fun write(value: Any?): String = StringBuilder().also { write(value, it) }.toString()

    private fun write(value: Any?, out: StringBuilder) {
        when (value) {
            null -> out.append("null")
            is String -> quote(value, out)
            is Boolean -> out.append(value)
            is Double, is Float -> {
                val d = (value as Number).toDouble()
                require(d.isFinite()) { "JSON has no $d" }
                out.append(if (d == Math.rint(d) && kotlin.math.abs(d) < 1e15) d.toLong().toString() else d.toString())
            }
            is Number -> out.append(value.toLong())
            is Map<*, *> -> {
                out.append('{')
                value.entries.forEachIndexed { i, (k, v) ->
                    if (i > 0) out.append(',')
                    quote(k.toString(), out)
                    out.append(':')
                    write(v, out)
                }
                out.append('}')
            }
            is Iterable<*> -> {
                out.append('[')
                value.forEachIndexed { i, v -> if (i > 0) out.append(','); write(v, out) }
                out.append(']')
            }
            is DoubleArray -> write(value.asList(), out)
            is FloatArray -> write(value.asList(), out)
            is IntArray -> write(value.asList(), out)
            else -> throw IllegalArgumentException("cannot write a ${value::class.simpleName} as JSON")
        }
    }

    private fun quote(s: String, out: StringBuilder) {
        out.append('"')
        for (c in s) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c == '\n' -> out.append("\\n")
                c == '\r' -> out.append("\\r")
                c == '\t' -> out.append("\\t")
                c < ' ' -> out.append("\\u%04x".format(c.code))
                else -> out.append(c)
            }
        }
        out.append('"')
    }

    private class Reader(val text: String) {
        var pos = 0

        fun fail(message: String): Nothing = throw IllegalArgumentException("invalid JSON at offset $pos: $message")

        fun skipSpace() {
            while (pos < text.length && text[pos] in " \t\r\n") pos++
        }

        fun value(): Any? {
            if (pos >= text.length) fail("unexpected end of text")
            return when (val c = text[pos]) {
                '{' -> obj()
                '[' -> array()
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c in '0'..'9') number() else fail("unexpected '$c'")
            }
        }

        fun literal(word: String, value: Any?): Any? {
            if (!text.startsWith(word, pos)) fail("expected $word")
            pos += word.length
            return value
        }

        fun obj(): Map<String, Any?> {
            val map = LinkedHashMap<String, Any?>()
            pos++ // {
            skipSpace()
            if (pos < text.length && text[pos] == '}') return map.also { pos++ }
            while (true) {
                skipSpace()
                if (pos >= text.length || text[pos] != '"') fail("expected a string key")
                val key = string()
                skipSpace()
                if (pos >= text.length || text[pos] != ':') fail("expected ':' after key \"$key\"")
                pos++
                skipSpace()
                map[key] = value()
                skipSpace()
                if (pos >= text.length) fail("unterminated object")
                when (text[pos++]) {
                    ',' -> continue
                    '}' -> return map
                    else -> { pos--; fail("expected ',' or '}'") }
                }
            }
        }

        fun array(): List<Any?> {
            val list = ArrayList<Any?>()
            pos++ // [
            skipSpace()
            if (pos < text.length && text[pos] == ']') return list.also { pos++ }
            while (true) {
                skipSpace()
                list.add(value())
                skipSpace()
                if (pos >= text.length) fail("unterminated array")
                when (text[pos++]) {
                    ',' -> continue
                    ']' -> return list
                    else -> { pos--; fail("expected ',' or ']'") }
                }
            }
        }

        fun string(): String {
            val out = StringBuilder()
            pos++ // opening quote
            while (true) {
                if (pos >= text.length) fail("unterminated string")
                val c = text[pos++]
                when {
                    c == '"' -> return out.toString()
                    c < ' ' -> { pos--; fail("control character in a string") }
                    c != '\\' -> out.append(c)
                    else -> {
                        if (pos >= text.length) fail("unterminated string")
                        when (val e = text[pos++]) {
                            '"', '\\', '/' -> out.append(e)
                            'b' -> out.append('\b')
                            'f' -> out.append('\u000C')
                            'n' -> out.append('\n')
                            'r' -> out.append('\r')
                            't' -> out.append('\t')
                            'u' -> {
                                val hex = text.substring(pos, minOf(pos + 4, text.length))
                                val isHex = hex.length == 4 && hex.all { it in '0'..'9' || it in 'a'..'f' || it in 'A'..'F' }
                                if (!isHex) fail("bad \\u escape")
                                out.append(hex.toInt(16).toChar()) // surrogate pairs come as two escapes
                                pos += 4
                            }
                            else -> { pos--; fail("bad escape '\\$e'") }
                        }
                    }
                }
            }
        }

        fun number(): Double {
            val start = pos
            if (text[pos] == '-') pos++
            fun digits(): Int {
                val from = pos
                while (pos < text.length && text[pos] in '0'..'9') pos++
                return pos - from
            }
            if (pos < text.length && text[pos] == '0') pos++ else if (digits() == 0) fail("expected a digit")
            if (pos < text.length && text[pos] == '.') {
                pos++
                if (digits() == 0) fail("expected a digit after '.'")
            }
            if (pos < text.length && (text[pos] == 'e' || text[pos] == 'E')) {
                pos++
                if (pos < text.length && (text[pos] == '+' || text[pos] == '-')) pos++
                if (digits() == 0) fail("expected a digit in the exponent")
            }
            return text.substring(start, pos).toDouble()
        }
    }
}
