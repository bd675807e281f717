package org.vmmkit.core.platform;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * The last {@code capacity} console lines, each with a sequence number (0, 1, 2, ... since this log was
 * made), for a caller that reads them later (the control endpoint): {@link #since} returns what came after
 * the last line it saw, and says by the first number it returns whether lines fell out in between. Every line
 * is passed on to {@code next} as well (a process log). Thread-safe.
 */
public final class ConsoleLog implements ConsoleSink {
    /** One console line and its number in this log. */
    public record Line(long sequence, String text) {}

    private final int capacity;
    private final ConsoleSink next;
    private final ArrayDeque<Line> lines;
    private long nextSequence;

    public ConsoleLog(int capacity, ConsoleSink next) {
        if (capacity < 1) throw new IllegalArgumentException("a console log keeps at least 1 line, not " + capacity);
        this.capacity = capacity;
        this.next = next;
        this.lines = new ArrayDeque<>(Math.min(capacity, 1024));
    }

    /** A log that passes lines on to nothing. */
    public ConsoleLog(int capacity) {
        this(capacity, text -> { });
    }

    @Override
    public void line(String text) {
        synchronized (this) {
            if (lines.size() == capacity) lines.removeFirst();
            lines.addLast(new Line(nextSequence++, text));
        }
        next.line(text);
    }

    /** The lines kept, oldest first. */
    public synchronized List<Line> lines() {
        return List.copyOf(lines);
    }

    /** The lines kept whose sequence is greater than {@code sequence} (-1 for all), oldest first. */
    public synchronized List<Line> since(long sequence) {
        List<Line> out = new ArrayList<>();
        for (Line l : lines) if (l.sequence() > sequence) out.add(l);
        return out;
    }

    /** How many lines were ever written to this log (the next line's sequence). */
    public synchronized long written() {
        return nextSequence;
    }
}
