package org.vmmkit.migration.transport;

import java.io.IOException;
import java.io.InputStream;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.TrustManagerFactory;
import javax.security.auth.x500.X500Principal;

/**
 * TLS 1.3 with mutual authentication on every migration connection, in the spirit of QEMU's
 * {@code tls-creds-x509} and {@code tls-authz}: this side's certificate and key (PEM files, or a PKCS#12
 * keystore), the CA certificates a peer's certificate must chain to, and an optional list of the peer
 * identities allowed (a distinguished name such as {@code CN=host-a,O=example}, or a bare name matched
 * against the certificate's CN and DNS subject alternative names). A peer without a valid certificate, or
 * not on the list, is refused in the handshake, before anything of either VM changes.
 */
public final class TlsTransport implements Transport {
    private final SSLContext context;
    private final List<String> allowed;

    /** Where the key material is; {@code allowed} empty lets in any peer whose certificate the CA signed. */
    public record Settings(Path certificate, Path key, Path keystore, String keystorePassword, Path ca, List<String> allowed) {
        public Settings {
            allowed = List.copyOf(allowed);
        }
    }

    private TlsTransport(SSLContext context, List<String> allowed) {
        this.context = context;
        this.allowed = allowed;
    }

    /** Loads the files the settings name; a missing or malformed one is an error naming it and why. */
    public static TlsTransport load(Settings s) {
        try {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            char[] password;
            if (s.keystore() != null) {
                password = s.keystorePassword() == null ? new char[0] : s.keystorePassword().toCharArray();
                try (InputStream in = Files.newInputStream(s.keystore())) {
                    keys.load(in, password);
                } catch (IOException e) {
                    throw new IllegalArgumentException("cannot read the TLS keystore " + s.keystore() + ": " + reason(e), e);
                }
            } else {
                if (s.certificate() == null || s.key() == null) {
                    throw new IllegalArgumentException("TLS needs this side's certificate and key (PEM files) or a PKCS#12 keystore");
                }
                password = new char[0];
                keys.load(null, null);
                List<Certificate> chain = certificates(s.certificate());
                keys.setKeyEntry("migration", privateKey(s.key()), password, chain.toArray(new Certificate[0]));
            }
            if (s.ca() == null) throw new IllegalArgumentException("TLS needs the CA certificates that peers' certificates must chain to");
            KeyStore trust = KeyStore.getInstance("PKCS12");
            trust.load(null, null);
            int n = 0;
            for (Certificate c : certificates(s.ca())) trust.setCertificateEntry("ca" + n++, c);
            KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, password);
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(trust);
            javax.net.ssl.X509ExtendedTrustManager verify = null;
            for (javax.net.ssl.TrustManager tm : tmf.getTrustManagers()) if (tm instanceof javax.net.ssl.X509ExtendedTrustManager x) verify = x;
            SSLContext context = SSLContext.getInstance("TLSv1.3");
            context.init(kmf.getKeyManagers(), new javax.net.ssl.TrustManager[] {new Authorizing(verify, s.allowed())}, null);
            return new TlsTransport(context, s.allowed());
        } catch (GeneralSecurityException | IOException e) {
            throw new IllegalArgumentException("cannot set up TLS: " + reason(e), e);
        }
    }

    private static String reason(Exception e) {
        return e instanceof java.nio.file.NoSuchFileException ? "no such file" : e.getMessage() == null ? e.toString() : e.getMessage();
    }

    private static List<Certificate> certificates(Path pem) throws IOException, GeneralSecurityException {
        Collection<? extends Certificate> all;
        try (InputStream in = Files.newInputStream(pem)) {
            all = CertificateFactory.getInstance("X.509").generateCertificates(in);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read certificates from " + pem + ": " + reason(e), e);
        }
        if (all.isEmpty()) throw new IllegalArgumentException(pem + " holds no certificate");
        return new ArrayList<>(all);
    }

    private static final Pattern PEM_KEY = Pattern.compile("-----BEGIN (EC |RSA )?PRIVATE KEY-----(.*?)-----END (EC |RSA )?PRIVATE KEY-----", Pattern.DOTALL);

    /** An unencrypted PKCS#8 private key in PEM ({@code BEGIN PRIVATE KEY}), RSA or EC. */
    private static PrivateKey privateKey(Path pem) throws IOException, GeneralSecurityException {
        String text;
        try {
            text = Files.readString(pem, StandardCharsets.US_ASCII);
        } catch (IOException e) {
            throw new IllegalArgumentException("cannot read the TLS key " + pem + ": " + reason(e), e);
        }
        Matcher m = PEM_KEY.matcher(text);
        if (!m.find() || m.group(1) != null) {
            throw new IllegalArgumentException(pem + " holds no unencrypted PKCS#8 private key (BEGIN PRIVATE KEY; convert with openssl pkcs8 -topk8 -nocrypt)");
        }
        byte[] der = Base64.getMimeDecoder().decode(m.group(2));
        for (String algorithm : new String[] {"EC", "RSA", "Ed25519"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(der));
            } catch (java.security.spec.InvalidKeySpecException wrongAlgorithm) {
                // try the next
            }
        }
        throw new IllegalArgumentException(pem + " holds a private key of an algorithm other than EC, RSA or Ed25519");
    }

    private SSLEngine engine(boolean client) {
        SSLEngine engine = context.createSSLEngine();
        engine.setUseClientMode(client);
        SSLParameters p = engine.getSSLParameters();
        p.setProtocols(new String[] {"TLSv1.3"});
        if (!client) p.setNeedClientAuth(true);
        engine.setSSLParameters(p);
        return engine;
    }

    @Override
    public Connection client(SocketChannel socket) throws IOException {
        return TlsConnection.handshake(socket, engine(true));
    }

    @Override
    public Connection server(SocketChannel socket) throws IOException {
        return TlsConnection.handshake(socket, engine(false));
    }

    @Override
    public String kind() {
        return "tls";
    }

    /**
     * The CA's verification, then the authorization list: a peer whose chain does not verify, or whose
     * certificate names no allowed identity, fails the handshake (the other side gets a TLS alert, and this
     * side an exception saying why).
     */
    private static final class Authorizing extends javax.net.ssl.X509ExtendedTrustManager {
        private final javax.net.ssl.X509ExtendedTrustManager verify;
        private final List<String> allowed;

        Authorizing(javax.net.ssl.X509ExtendedTrustManager verify, List<String> allowed) {
            this.verify = verify;
            this.allowed = allowed;
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, java.net.Socket socket) throws java.security.cert.CertificateException {
            verify.checkClientTrusted(chain, authType, socket);
            authorize(chain[0]);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, java.net.Socket socket) throws java.security.cert.CertificateException {
            verify.checkServerTrusted(chain, authType, socket);
            authorize(chain[0]);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws java.security.cert.CertificateException {
            verify.checkClientTrusted(chain, authType, engine);
            authorize(chain[0]);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType, SSLEngine engine) throws java.security.cert.CertificateException {
            verify.checkServerTrusted(chain, authType, engine);
            authorize(chain[0]);
        }

        @Override
        public void checkClientTrusted(X509Certificate[] chain, String authType) throws java.security.cert.CertificateException {
            verify.checkClientTrusted(chain, authType);
            authorize(chain[0]);
        }

        @Override
        public void checkServerTrusted(X509Certificate[] chain, String authType) throws java.security.cert.CertificateException {
            verify.checkServerTrusted(chain, authType);
            authorize(chain[0]);
        }

        @Override
        public X509Certificate[] getAcceptedIssuers() {
            return verify.getAcceptedIssuers();
        }

        private void authorize(X509Certificate cert) throws java.security.cert.CertificateException {
            if (allowed.isEmpty()) return;
            X500Principal subject = cert.getSubjectX500Principal();
            List<String> names = new ArrayList<>();
            String cn = commonName(subject);
            if (cn != null) names.add(cn);
            if (cert.getSubjectAlternativeNames() != null) {
                for (List<?> san : cert.getSubjectAlternativeNames()) if (Integer.valueOf(2).equals(san.get(0))) names.add((String) san.get(1));
            }
            for (String a : allowed) {
                if (a.contains("=") ? new X500Principal(a).equals(subject) : names.contains(a)) return;
            }
            throw new java.security.cert.CertificateException("peer " + subject.getName() + " is not in migration.tls.authz " + allowed);
        }
    }

    private static String commonName(X500Principal subject) {
        try {
            for (javax.naming.ldap.Rdn rdn : new javax.naming.ldap.LdapName(subject.getName()).getRdns()) {
                if (rdn.getType().equalsIgnoreCase("CN")) return String.valueOf(rdn.getValue());
            }
        } catch (javax.naming.InvalidNameException e) {
            return null;
        }
        return null;
    }
}
