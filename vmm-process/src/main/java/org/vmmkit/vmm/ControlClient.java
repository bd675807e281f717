package org.vmmkit.vmm;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.channels.Channels;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;

/**
 * A client of a vmm process's control endpoint: commands and their answers on one connection, and, once it
 * subscribed, the events the endpoint pushes between them (kept in arrival order for {@link #nextEvent}).
 */
public final class ControlClient implements AutoCloseable {
    private final Path path;
    private final SocketChannel channel;
    private final BufferedReader in;
    private final OutputStream out;
    private final java.util.ArrayDeque<JsonObject> events = new java.util.ArrayDeque<>();

    private ControlClient(Path path, SocketChannel channel) {
        this.path = path;
        this.channel = channel;
        this.in = new BufferedReader(new InputStreamReader(Channels.newInputStream(channel), StandardCharsets.UTF_8));
        this.out = Channels.newOutputStream(channel);
    }

    /** Connects to the endpoint at {@code path}. */
    public static ControlClient connect(Path path) throws IOException {
        SocketChannel c = SocketChannel.open(StandardProtocolFamily.UNIX);
        try {
            c.connect(UnixDomainSocketAddress.of(path));
        } catch (IOException e) {
            c.close();
            throw new IOException("cannot reach the control endpoint " + path + ": " + e.getMessage(), e);
        }
        return new ControlClient(path, c);
    }

    /** Connects, retrying until the endpoint exists (a process that is starting) or {@code timeout} passes. */
    public static ControlClient await(Path path, Duration timeout, ProcessHandle process) throws IOException, InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (true) {
            try {
                return connect(path);
            } catch (IOException e) {
                if (process != null && !process.isAlive()) throw new IOException("the process behind " + path + " exited", e);
                if (System.nanoTime() > deadline) throw e;
                Thread.sleep(50);
            }
        }
    }

    /** Runs a command; returns its {@code return} value, or throws {@link ControlException} with the endpoint's error. */
    public JsonElement execute(String command, Map<String, ?> arguments) throws IOException {
        Map<String, Object> request = new LinkedHashMap<>();
        request.put("execute", command);
        if (arguments != null && !arguments.isEmpty()) request.put("arguments", arguments);
        out.write((ControlServer.GSON.toJson(request) + "\n").getBytes(StandardCharsets.UTF_8));
        out.flush();
        JsonObject answer;
        while (true) { // events that come before the answer are kept for nextEvent
            String line = in.readLine();
            if (line == null) throw new IOException("the control endpoint " + path + " closed without answering " + command);
            answer = JsonParser.parseString(line).getAsJsonObject();
            if (!answer.has("event")) break;
            events.add(answer);
        }
        if (answer.has("error")) throw new ControlException(answer.getAsJsonObject("error").get("desc").getAsString()); // "command: why"
        return answer.get("return");
    }

    /**
     * Subscribes this connection to the endpoint's events: from the answer on, every event reaches it in
     * order ({@link #nextEvent}).
     */
    public void subscribe() throws IOException {
        execute("subscribe", null);
    }

    /**
     * The next event, waiting for it (the endpoint pushes it; nothing is polled): {@code {"event": NAME,
     * "data": {...}, "timestamp": ...}}. An IOException if the endpoint closed the connection (the process
     * quit, or dropped this subscriber).
     */
    public JsonObject nextEvent() throws IOException {
        if (!events.isEmpty()) return events.poll();
        while (true) {
            String line = in.readLine();
            if (line == null) throw new IOException("the control endpoint " + path + " closed the connection while events were awaited");
            JsonObject o = JsonParser.parseString(line).getAsJsonObject();
            if (o.has("event")) return o;
            // an answer with no command pending cannot come; skip it rather than lose the stream of events
        }
    }

    /** Runs a command without arguments and returns its answer as an object. */
    public JsonObject query(String command) throws IOException {
        return execute(command, null).getAsJsonObject();
    }

    @Override
    public void close() throws IOException {
        channel.close();
    }

    /** The endpoint refused a command; the message is its reason. */
    public static final class ControlException extends IOException {
        public ControlException(String message) {
            super(message);
        }
    }
}
