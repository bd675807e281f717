package org.vmmkit.vmm;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/**
 * A source ({@code vmm run}) and a destination ({@code vmm incoming --record-digest}) process from one config
 * file, as the two-process tests start them: the destination listening on {@code listen} (its actual address,
 * port 0 resolved, in {@link #listen}), both control endpoints answering. {@link #close} quits both and prints
 * the log tail of one that did not exit 0.
 */
final class VmmPair implements AutoCloseable {
    final Path sourceControl, destinationControl;
    final Demo.Child source, destination;
    /** Where the destination listens, as query-status shows it ({@code HOST:PORT} or {@code unix:PATH}). */
    final String listen;

    private VmmPair(Path sourceControl, Path destinationControl, Demo.Child source, Demo.Child destination, String listen) {
        this.sourceControl = sourceControl;
        this.destinationControl = destinationControl;
        this.source = source;
        this.destination = destination;
        this.listen = listen;
    }

    /** Starts both with {@code config} in {@code dir}, each with its own extra {@code --set key=value} overrides. */
    static VmmPair start(Path dir, List<String> config, String listen, List<String> sourceSets, List<String> destinationSets) throws Exception {
        Path file = dir.resolve("vm.conf");
        Files.write(file, config);
        Path sourceControl = dir.resolve("source.sock"), destinationControl = dir.resolve("destination.sock");
        List<String> dstArgs = new ArrayList<>(List.of("incoming", "--config", file.toString(), "--listen", listen,
                "--control", destinationControl.toString(), "--record-digest"));
        for (String set : destinationSets) dstArgs.addAll(List.of("--set", set));
        Demo.Child destination = Demo.Child.start("destination", dir, false, dstArgs.toArray(String[]::new));
        Demo.Child source = null;
        try {
            List<String> srcArgs = new ArrayList<>(List.of("run", "--config", file.toString(), "--control", sourceControl.toString()));
            for (String set : sourceSets) srcArgs.addAll(List.of("--set", set));
            source = Demo.Child.start("source", dir, false, srcArgs.toArray(String[]::new));
            String at;
            try (ControlClient d = ControlClient.await(destinationControl, Duration.ofSeconds(30), destination.process.toHandle())) {
                at = d.query("query-status").get("listen").getAsString();
            }
            ControlClient.await(sourceControl, Duration.ofSeconds(30), source.process.toHandle()).close();
            return new VmmPair(sourceControl, destinationControl, source, destination, at);
        } catch (Exception | Error e) {
            destination.stop(destinationControl);
            if (source != null) source.stop(sourceControl);
            throw e;
        }
    }

    @Override
    public void close() {
        for (Demo.Child c : List.of(source, destination)) {
            c.stop(c == source ? sourceControl : destinationControl);
            if (c.process.exitValue() != 0) c.printLogTail();
        }
    }
}
