// The exact-type parse of jobs/clean.py in one streaming pass: a Spark SQL function (Java UDF) that reads one raw
// line with Jackson, the JSON parser Spark's own VARIANT parse uses, and returns per requested field its exact JSON
// type, named as Spark's schema_of_variant names it, and its text. jobs/exact_json.py compiles it with the JVM's own
// compiler at first use and registers it; jobs/clean.py parse() falls back to Spark SQL (VARIANT + json_tuple) where
// it cannot. tests/test_exact_json.py holds both parses to the same outcome on every kind of line.
package attnrec.spark;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.math.BigDecimal;
import java.util.Arrays;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;

/**
 * {@code (line, "f1,f2,...")} to a row {@code (is_object, t_f1, s_f1, t_f2, s_f2, ...)}.
 *
 * <p>{@code is_object}: the line is exactly one JSON object (JSON whitespace around it allowed), valid JSON with no
 * duplicate key at any depth; otherwise false and every type and text null. {@code t_f}: the field's JSON type as
 * {@code schema_of_variant} names it ({@code STRING}, {@code BIGINT} for an integer that fits 64 bits, {@code
 * DECIMAL(p,s)} for a number without exponent of at most 38 digits, {@code DOUBLE} for other numbers, {@code
 * BOOLEAN}, {@code VOID} for JSON null; {@code OBJECT} or {@code ARRAY} for a nested value, without its element
 * types); null when the field is absent. {@code s_f}: a string's unescaped value or a number's literal text; null for
 * null and nested values.
 */
public final class ExactJsonFields implements UDF2<String, String, Row> {
  private static final long serialVersionUID = 1L;
  /** Jackson's defaults, as Spark's VARIANT parse: strict JSON (no comments, NaN, single quotes, leading zeros). */
  private static final JsonFactory JSON =
      new JsonFactory().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
  /** VARIANT's largest decimal: numbers with more digits (or a larger scale) are doubles. */
  private static final int MAX_DECIMAL_DIGITS = 38;

  private transient String fieldList;
  private transient String[] fields;

  @Override
  public Row call(String line, String fieldNames) throws IOException {
    if (fields == null || !fieldNames.equals(fieldList)) {
      fields = fieldNames.split(",");
      fieldList = fieldNames;
    }
    Object[] out = new Object[1 + 2 * fields.length];
    out[0] = Boolean.FALSE;
    if (line == null || !opensObject(line)) {
      return RowFactory.create(out);
    }
    try (JsonParser parser = JSON.createParser(line)) {
      parser.nextToken(); // the "{" opensObject saw
      JsonToken token;
      while ((token = parser.nextToken()) == JsonToken.FIELD_NAME) {
        String name = parser.currentName();
        JsonToken value = parser.nextToken();
        if (!wellFormed(name) || !wellFormedValue(parser, value)) {
          return invalid(out);
        }
        int i = indexOf(name);
        if (i < 0) {
          continue;
        }
        String type;
        String text = null;
        switch (value) {
          case VALUE_STRING:
            type = "STRING";
            text = parser.getText();
            break;
          case VALUE_NUMBER_INT:
            type = integerType(parser);
            text = parser.getText();
            break;
          case VALUE_NUMBER_FLOAT:
            text = parser.getText();
            type = fractionType(text);
            break;
          case VALUE_TRUE:
          case VALUE_FALSE:
            type = "BOOLEAN";
            text = parser.getText();
            break;
          case VALUE_NULL:
            type = "VOID";
            break;
          case START_OBJECT: // read whole by wellFormedValue
            type = "OBJECT";
            break;
          case START_ARRAY:
            type = "ARRAY";
            break;
          default:
            return invalid(out);
        }
        out[1 + 2 * i] = type;
        out[2 + 2 * i] = text;
      }
      // the object closed and nothing but whitespace after it (a second value, a comma, a stray "]" all fail)
      if (token != JsonToken.END_OBJECT || parser.nextToken() != null) {
        return invalid(out);
      }
    } catch (IOException malformed) { // Jackson's parse errors, duplicate keys included
      return invalid(out);
    }
    out[0] = Boolean.TRUE;
    return RowFactory.create(out);
  }

  /** The first character after JSON's whitespace (space, tab, CR, LF; no byte-order mark) is "{". */
  private static boolean opensObject(String line) {
    for (int i = 0; i < line.length(); i++) {
      char c = line.charAt(i);
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
        return c == '{';
      }
    }
    return false;
  }

  /**
   * Reads a value whose first token is {@code first} to its end, nested ones whole (so a syntax error or a duplicate
   * key inside fails the line); false when a string or key in it is not well-formed Unicode (an unpaired surrogate
   * escape such as "\ud800", which Spark's VARIANT parse rejects too). Leaves the parser on the value's last token:
   * END_OBJECT or END_ARRAY for a nested value.
   */
  private static boolean wellFormedValue(JsonParser parser, JsonToken first) throws IOException {
    if (first == JsonToken.VALUE_STRING) {
      return wellFormed(parser.getText());
    }
    if (first != JsonToken.START_OBJECT && first != JsonToken.START_ARRAY) {
      return first != null;
    }
    int depth = 1;
    while (depth > 0) {
      JsonToken token = parser.nextToken();
      if (token == null) {
        return false;
      }
      switch (token) {
        case START_OBJECT:
        case START_ARRAY:
          depth++;
          break;
        case END_OBJECT:
        case END_ARRAY:
          depth--;
          break;
        case FIELD_NAME:
        case VALUE_STRING:
          if (!wellFormed(parser.getText())) {
            return false;
          }
          break;
        default:
          break;
      }
    }
    return true;
  }

  /** Every surrogate in {@code text} is half of a pair. */
  private static boolean wellFormed(String text) {
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      if (Character.isHighSurrogate(c)) {
        if (i + 1 == text.length() || !Character.isLowSurrogate(text.charAt(i + 1))) {
          return false;
        }
        i++;
      } else if (Character.isLowSurrogate(c)) {
        return false;
      }
    }
    return true;
  }

  private static Row invalid(Object[] out) {
    Arrays.fill(out, null);
    out[0] = Boolean.FALSE;
    return RowFactory.create(out);
  }

  private int indexOf(String name) {
    for (int i = 0; i < fields.length; i++) {
      if (fields[i].equals(name)) {
        return i;
      }
    }
    return -1;
  }

  /** An integer literal: BIGINT when it fits 64 bits, else as VARIANT stores it (a decimal, or a double). */
  private static String integerType(JsonParser parser) throws IOException {
    JsonParser.NumberType kind = parser.getNumberType();
    if (kind == JsonParser.NumberType.INT || kind == JsonParser.NumberType.LONG) {
      return "BIGINT";
    }
    return fractionType(parser.getText());
  }

  /** A number VARIANT stores as a decimal (no exponent, at most 38 digits and scale) or else as a double; the
   * decimal's type named after its value without trailing zeros, as schema_of_variant names it. */
  private static String fractionType(String literal) {
    for (int i = 0; i < literal.length(); i++) {
      char c = literal.charAt(i);
      if (c != '-' && c != '.' && (c < '0' || c > '9')) {
        return "DOUBLE";
      }
    }
    BigDecimal value = new BigDecimal(literal);
    if (value.scale() > MAX_DECIMAL_DIGITS || value.precision() > MAX_DECIMAL_DIGITS) {
      return "DOUBLE";
    }
    value = value.stripTrailingZeros();
    if (value.scale() < 0) {
      value = value.setScale(0);
    }
    return "DECIMAL(" + Math.max(value.precision(), value.scale()) + "," + value.scale() + ")";
  }
}
