package tidemark.convert;

import java.sql.Array;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.connect.data.Schema;
import org.apache.kafka.connect.data.SchemaBuilder;

import io.debezium.spi.converter.CustomConverter;
import io.debezium.spi.converter.RelationalColumn;

/**
 * Postgres arrays that Debezium cannot convert exactly, sent as the text of each element.
 *
 * Seen on Debezium 3.6 with pgoutput and in the snapshot: interval[], money[], xml[],
 * varbit[] and point[] columns vanish from the row; bit(n)[] arrives NULL; an enum[] holding a
 * NULL element, or a numeric[] holding NaN, arrives NULL as a whole; time[] and timetz[] lose
 * their microseconds; and an array of any type with more than one dimension arrives as NULL
 * elements. This converter takes over every array column (but hstore[], whose elements
 * Debezium writes as JSON like a scalar hstore) and emits an optional array of optional
 * strings, each element as Postgres prints it (NULL elements stay null). The schema is named
 * `tidemark.PgArrayText` and carries the element type (`tidemark.element`) and the column's
 * length and scale; the Python decoder turns the texts into typed values
 * (connectors/decode/pgtext.py).
 *
 * Arrays of more than one dimension cannot be one list: the value becomes the single element
 * `MULTIDIM` + the array's text, and the decoder makes the event a dead letter with that
 * text, rather than NULLs. An unchanged TOAST value becomes Debezium's placeholder, as for
 * text arrays.
 */
public final class PgArrayText implements CustomConverter<SchemaBuilder, RelationalColumn> {

    public static final String SCHEMA_NAME = "tidemark.PgArrayText";
    public static final String MULTIDIM = "__tidemark_multidimensional__:";

    /** Element types whose arrays keep Debezium's own conversion. */
    static final Set<String> KEPT = Set.of("hstore");

    private String placeholder = "__debezium_unavailable_value";

    @Override
    public void configure(Properties props) {
        placeholder = props.getProperty("unavailable.value.placeholder", placeholder);
    }

    @Override
    public void converterFor(RelationalColumn column, ConverterRegistration<SchemaBuilder> registration) {
        String type = column.typeName();
        if (type == null || !type.startsWith("_")) {
            return;
        }
        String element = type.substring(1).toLowerCase(Locale.ROOT);
        if (element.startsWith("\"") && element.endsWith("\"")) {
            element = element.substring(1, element.length() - 1);
        }
        if (KEPT.contains(element)) {
            return;
        }
        SchemaBuilder schema = SchemaBuilder.array(Schema.OPTIONAL_STRING_SCHEMA).optional()
                .name(SCHEMA_NAME)
                .parameter("tidemark.element", element);
        column.length().ifPresent(n -> schema.parameter("tidemark.length", Integer.toString(n)));
        column.scale().ifPresent(n -> schema.parameter("tidemark.scale", Integer.toString(n)));
        char delimiter = "box".equals(element) ? ';' : ',';
        registration.register(schema, value -> convert(value, delimiter));
    }

    private Object convert(Object value, char delimiter) {
        if (value == null) {
            return null;
        }
        String text;
        if (value instanceof Array || value instanceof String) {
            text = value.toString();
        }
        else {
            // Debezium's marker objects for an unchanged TOAST value.
            return Collections.singletonList(placeholder);
        }
        return elements(text, delimiter);
    }

    /** The elements of a one-dimensional array literal, or the multi-dimension marker. */
    static List<String> elements(String literal, char delimiter) {
        String text = literal.strip();
        if (text.startsWith("[")) { // explicit bounds: [0:2]={...}
            text = text.substring(text.indexOf('=') + 1).strip();
        }
        if (!text.startsWith("{") || !text.endsWith("}")) {
            throw new IllegalArgumentException("not an array literal: " + literal);
        }
        List<String> out = new ArrayList<>();
        String body = text.substring(1, text.length() - 1);
        int i = 0;
        int n = body.length();
        if (body.strip().isEmpty()) {
            return out;
        }
        while (i <= n) {
            while (i < n && Character.isWhitespace(body.charAt(i))) {
                i++;
            }
            if (i < n && body.charAt(i) == '{') {
                return Collections.singletonList(MULTIDIM + literal);
            }
            StringBuilder item = new StringBuilder();
            boolean quoted = false;
            if (i < n && body.charAt(i) == '"') {
                quoted = true;
                i++;
                while (i < n && body.charAt(i) != '"') {
                    char c = body.charAt(i);
                    if (c == '\\' && i + 1 < n) {
                        i++;
                        c = body.charAt(i);
                    }
                    item.append(c);
                    i++;
                }
                i++; // the closing quote
                while (i < n && body.charAt(i) != delimiter) {
                    i++;
                }
            }
            else {
                while (i < n && body.charAt(i) != delimiter) {
                    item.append(body.charAt(i));
                    i++;
                }
            }
            String element = quoted ? item.toString() : item.toString().strip();
            out.add(!quoted && "NULL".equalsIgnoreCase(element) ? null : element);
            i++; // the delimiter
        }
        return out;
    }
}
