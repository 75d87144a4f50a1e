package nettap.testapps;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/** {@code --key value} arguments. */
final class Args {
    private final Map<String, String> values = new HashMap<>();

    Args(String[] args) {
        for (int i = 0; i + 1 < args.length; i += 2) {
            if (!args[i].startsWith("--")) {
                throw new IllegalArgumentException("expected --key, got " + args[i]);
            }
            values.put(args[i].substring(2), args[i + 1]);
        }
    }

    String get(String key) {
        String v = values.get(key);
        if (v == null) {
            throw new IllegalArgumentException("--" + key + " is required");
        }
        return v;
    }

    String get(String key, String dflt) {
        return values.getOrDefault(key, dflt);
    }

    int integer(String key) {
        return Integer.parseInt(get(key));
    }

    List<Integer> sizes() {
        List<Integer> out = new ArrayList<>();
        for (String s : get("sizes").split(",")) {
            out.add(Integer.parseInt(s));
        }
        return out;
    }
}
