package org.vmmkit.vmm;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/** The command line run in this JVM: its exit code and what it printed on stdout and on stderr. */
record CliRun(int code, String out, String err) {
    /** Config overrides for a small software guest (no KVM needed). */
    static final List<String> SOFTWARE_GUEST = List.of("vm.accelerator=software", "vm.memory=16M", "workload.size=4M",
            "workload.pages-per-second=10000", "device.gpu0.memory=1M");

    /** {@code args} followed by a {@code --set} for each of {@link #SOFTWARE_GUEST}: a run or incoming command for a software guest. */
    static String[] softwareGuest(String... args) {
        List<String> all = new ArrayList<>(List.of(args));
        for (String o : SOFTWARE_GUEST) all.addAll(List.of("--set", o));
        return all.toArray(String[]::new);
    }

    static CliRun of(String... args) {
        PrintStream out = System.out, err = System.err;
        ByteArrayOutputStream stdout = new ByteArrayOutputStream(), stderr = new ByteArrayOutputStream();
        System.setOut(new PrintStream(stdout, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(stderr, true, StandardCharsets.UTF_8));
        try {
            int code = Main.run(args);
            return new CliRun(code, stdout.toString(StandardCharsets.UTF_8), stderr.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(out);
            System.setErr(err);
        }
    }

    @Override
    public String toString() {
        return "exit " + code + "\nstdout: " + out + "\nstderr: " + err;
    }
}
