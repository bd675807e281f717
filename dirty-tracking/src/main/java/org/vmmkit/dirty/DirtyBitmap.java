package org.vmmkit.dirty;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.VarHandle;

import static java.lang.foreign.ValueLayout.JAVA_LONG;

/**
 * One bit per page, off-heap, in the kernel's layout: 64-bit little-endian words, bit {@code i} of word
 * {@code w} is page {@code 64 * w + i}. So {@code KVM_GET_DIRTY_LOG} or {@code VFIO_IOMMU_DIRTY_PAGES}
 * can fill {@link #segment()} in place. {@link #set} and {@link #getAndClearWord} are atomic, so a device
 * can mark pages while a sync takes them; everything else is for one thread at a time. Bits past
 * {@link #pages()} in the last word are always zero.
 */
public final class DirtyBitmap implements AutoCloseable {
    /** Coordinates (segment, byte offset); atomic access modes need the 8-byte alignment we allocate. */
    private static final VarHandle WORD = JAVA_LONG.varHandle();

    private final Arena arena;
    private final MemorySegment words;
    private final long pages;
    private final long wordCount;

    public DirtyBitmap(long pages) {
        if (pages <= 0) throw new IllegalArgumentException("a bitmap needs at least one page, got " + pages);
        this.pages = pages;
        this.wordCount = wordsFor(pages);
        this.arena = Arena.ofShared();
        this.words = arena.allocate(wordCount * 8, 64);
    }

    /** 64-bit words needed for {@code pages} bits. */
    public static long wordsFor(long pages) {
        return (pages + 63) >>> 6;
    }

    public long pages() {
        return pages;
    }

    public long words() {
        return wordCount;
    }

    /** The words, for a kernel ioctl to fill or read in place. */
    public MemorySegment segment() {
        return words;
    }

    private void check(long page) {
        if (page < 0 || page >= pages) throw new IndexOutOfBoundsException("page " + page + " of a " + pages + "-page bitmap");
    }

    /** Marks a page; atomic. */
    public void set(long page) {
        check(page);
        WORD.getAndBitwiseOr(words, (page >>> 6) << 3, 1L << (page & 63));
    }

    public boolean test(long page) {
        check(page);
        return (words.get(JAVA_LONG, (page >>> 6) << 3) & (1L << (page & 63))) != 0;
    }

    /** Marks {@code [first, first + count)}; the partial words at either end are updated atomically. */
    public void setRange(long first, long count) {
        applyRange(first, count, true);
    }

    /** Unmarks {@code [first, first + count)}. Not atomic against concurrent {@link #set}. */
    public void clearRange(long first, long count) {
        applyRange(first, count, false);
    }

    private void applyRange(long first, long count, boolean set) {
        if (count == 0) return;
        check(first);
        check(first + count - 1);
        long end = first + count;
        long w = first >>> 6, lastWord = (end - 1) >>> 6;
        long headMask = -1L << (first & 63);
        long tailMask = -1L >>> (63 - ((end - 1) & 63));
        if (w == lastWord) {
            edge(w, headMask & tailMask, set);
            return;
        }
        edge(w, headMask, set);
        for (long i = w + 1; i < lastWord; i++) words.set(JAVA_LONG, i << 3, set ? -1L : 0L);
        edge(lastWord, tailMask, set);
    }

    private void edge(long word, long mask, boolean set) {
        if (set) WORD.getAndBitwiseOr(words, word << 3, mask);
        else words.set(JAVA_LONG, word << 3, words.get(JAVA_LONG, word << 3) & ~mask);
    }

    /** Marks every page. */
    public void setAll() {
        setRange(0, pages);
    }

    public void clear() {
        words.fill((byte) 0);
    }

    /** Word {@code w}, plain read. */
    public long word(long w) {
        return words.get(JAVA_LONG, w << 3);
    }

    /** Atomically takes word {@code w} and leaves it zero. */
    public long getAndClearWord(long w) {
        return (long) WORD.getAndSet(words, w << 3, 0L);
    }

    /** ORs another bitmap of the same size into this one. */
    public void or(DirtyBitmap other) {
        if (other.pages != pages) throw new IllegalArgumentException("bitmaps differ in size: " + pages + " vs " + other.pages);
        orWords(other.words);
    }

    /**
     * ORs {@link #words()} words of a kernel-layout buffer into this bitmap; bits past {@link #pages()}
     * are dropped.
     */
    public void orWords(MemorySegment source) {
        if (source.byteSize() < wordCount * 8) {
            throw new IllegalArgumentException("source has " + source.byteSize() + " bytes, the bitmap needs " + wordCount * 8);
        }
        long last = wordCount - 1;
        for (long i = 0; i < last; i++) {
            long v = source.get(JAVA_LONG, i << 3);
            if (v != 0) words.set(JAVA_LONG, i << 3, words.get(JAVA_LONG, i << 3) | v);
        }
        words.set(JAVA_LONG, last << 3, words.get(JAVA_LONG, last << 3) | (source.get(JAVA_LONG, last << 3) & lastWordMask()));
    }

    /** Moves every bit into {@code target} (same size), word by word atomically: no concurrent mark is lost. */
    public void moveTo(DirtyBitmap target) {
        if (target.pages != pages) throw new IllegalArgumentException("bitmaps differ in size");
        for (long i = 0; i < wordCount; i++) {
            if (words.get(JAVA_LONG, i << 3) == 0) continue;
            long v = getAndClearWord(i);
            target.words.set(JAVA_LONG, i << 3, target.words.get(JAVA_LONG, i << 3) | v);
        }
    }

    private long lastWordMask() {
        long used = pages & 63;
        return used == 0 ? -1L : (1L << used) - 1;
    }

    /** How many pages are marked. */
    public long count() {
        long n = 0;
        for (long i = 0; i < wordCount; i++) n += Long.bitCount(words.get(JAVA_LONG, i << 3));
        return n;
    }

    /** The first marked page at or after {@code from}, or -1. */
    public long nextSet(long from) {
        if (from >= pages) return -1;
        long w = from >>> 6;
        long v = words.get(JAVA_LONG, w << 3) & (-1L << (from & 63));
        while (v == 0) {
            if (++w >= wordCount) return -1;
            v = words.get(JAVA_LONG, w << 3);
        }
        return (w << 6) + Long.numberOfTrailingZeros(v);
    }

    /** The first unmarked page at or after {@code from}, or {@link #pages()}. */
    public long nextClear(long from) {
        if (from >= pages) return pages;
        long w = from >>> 6;
        long v = ~words.get(JAVA_LONG, w << 3) & (-1L << (from & 63));
        while (v == 0) {
            if (++w >= wordCount) return pages;
            v = ~words.get(JAVA_LONG, w << 3);
        }
        return Math.min(pages, (w << 6) + Long.numberOfTrailingZeros(v));
    }

    @Override
    public void close() {
        arena.close();
    }
}
