package org.vmmkit.migration.testing;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.Key;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;

import org.vmmkit.migration.transport.TlsTransport;

/**
 * Certificates for TLS tests, made with the JDK's own keytool (so nothing outside the JDK is needed): a CA,
 * peers it signs (each a PKCS#12 keystore, and the same key and chain as PEM files), and a second CA whose
 * peers the first one's do not trust.
 */
public final class TestCertificates {
    public static final String PASSWORD = "test-pass";
    private final Path dir;
    private final String keytool;

    public TestCertificates(Path dir) {
        this.dir = dir;
        Path java = Path.of(ProcessHandle.current().info().command().orElseThrow(() -> new IllegalStateException("no java command")));
        this.keytool = java.resolveSibling("keytool").toString();
    }

    /** Makes CA {@code name}: its keystore and its certificate as PEM ({@code name}.pem). */
    public Path ca(String name) throws IOException {
        Path store = dir.resolve(name + ".p12");
        keytool("-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=" + name, "-ext", "bc:c",
                "-validity", "7", "-keystore", store.toString(), "-storepass", PASSWORD);
        Path pem = dir.resolve(name + ".pem");
        keytool("-exportcert", "-rfc", "-alias", name, "-keystore", store.toString(), "-storepass", PASSWORD, "-file", pem.toString());
        return pem;
    }

    /** A peer named {@code cn} (its CN and a DNS SAN), signed by CA {@code ca}: returns its keystore; {@link #pem} gives PEM files. */
    public Path peer(String cn, String ca) throws IOException {
        Path store = dir.resolve(cn + ".p12"), csr = dir.resolve(cn + ".csr"), crt = dir.resolve(cn + ".crt");
        String caStore = dir.resolve(ca + ".p12").toString();
        keytool("-genkeypair", "-alias", cn, "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=" + cn, "-validity", "7",
                "-keystore", store.toString(), "-storepass", PASSWORD);
        keytool("-certreq", "-alias", cn, "-keystore", store.toString(), "-storepass", PASSWORD, "-file", csr.toString());
        keytool("-gencert", "-alias", ca, "-keystore", caStore, "-storepass", PASSWORD, "-infile", csr.toString(), "-outfile", crt.toString(),
                "-rfc", "-validity", "7", "-ext", "san=dns:" + cn);
        keytool("-importcert", "-noprompt", "-alias", ca, "-file", dir.resolve(ca + ".pem").toString(), "-keystore", store.toString(),
                "-storepass", PASSWORD);
        keytool("-importcert", "-alias", cn, "-file", crt.toString(), "-keystore", store.toString(), "-storepass", PASSWORD);
        return store;
    }

    /** Writes peer {@code cn}'s key (PKCS#8) and certificate chain as PEM files; returns {key, chain}. */
    public Path[] pem(String cn) throws Exception {
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try (InputStream in = Files.newInputStream(dir.resolve(cn + ".p12"))) {
            ks.load(in, PASSWORD.toCharArray());
        }
        Key key = ks.getKey(cn, PASSWORD.toCharArray());
        Path keyFile = dir.resolve(cn + "-key.pem"), chainFile = dir.resolve(cn + "-chain.pem");
        Files.writeString(keyFile, pem("PRIVATE KEY", key.getEncoded()));
        StringBuilder chain = new StringBuilder();
        for (Certificate c : ks.getCertificateChain(cn)) chain.append(pem("CERTIFICATE", c.getEncoded()));
        Files.writeString(chainFile, chain.toString());
        return new Path[] {keyFile, chainFile};
    }

    private static String pem(String type, byte[] der) {
        return "-----BEGIN " + type + "-----\n" + Base64.getMimeEncoder(64, new byte[] {'\n'}).encodeToString(der) + "\n-----END " + type + "-----\n";
    }

    /** TLS settings of peer {@code cn} from its keystore, trusting {@code caPem}, allowing {@code allowed}. */
    public TlsTransport.Settings keystoreSettings(String cn, Path caPem, String... allowed) {
        return new TlsTransport.Settings(null, null, dir.resolve(cn + ".p12"), PASSWORD, caPem, List.of(allowed));
    }

    /** The same from its PEM files ({@link #pem} first). */
    public TlsTransport.Settings pemSettings(String cn, Path caPem, String... allowed) {
        return new TlsTransport.Settings(dir.resolve(cn + "-chain.pem"), dir.resolve(cn + "-key.pem"), null, null, caPem, List.of(allowed));
    }

    private void keytool(String... args) throws IOException {
        List<String> command = new ArrayList<>(List.of(keytool));
        command.addAll(List.of(args));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        try {
            if (p.waitFor() != 0) throw new IOException("keytool " + String.join(" ", args) + " failed: " + out);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
    }
}
