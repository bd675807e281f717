package org.vmmkit.migration;

import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.vmmkit.migration.HandoverTest.Destination;
import org.vmmkit.migration.testing.FakeGuest;
import org.vmmkit.migration.testing.TestCertificates;
import org.vmmkit.migration.transport.TlsTransport;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/**
 * Migrations over TLS 1.3 with mutual authentication (no KVM: {@link FakeGuest}s): a genuine pair migrates
 * on every channel; a peer whose certificate another CA signed, a peer not on the authorization list and a
 * plain-TCP source are each refused before anything changes on either side, and the destination takes the
 * next genuine migration.
 */
@Timeout(120)
class TlsMigrationTest {
    private static final long SIZE = HandoverTest.SIZE;
    @TempDir static Path dir;
    static TestCertificates certs;
    static Path ca, otherCa;

    @BeforeAll
    static void certificates() throws Exception {
        certs = new TestCertificates(dir);
        ca = certs.ca("test-ca");
        otherCa = certs.ca("other-ca");
        certs.peer("source", "test-ca");
        certs.peer("destination", "test-ca");
        certs.peer("intruder", "test-ca");
        certs.peer("stranger", "other-ca");
        certs.pem("destination");
    }

    private static Destination tlsDestination() throws Exception {
        TlsTransport tls = TlsTransport.load(certs.pemSettings("destination", ca, "source", "CN=other-source"));
        return new Destination(d -> d.withTransport(tls));
    }

    private static MigrationSource source(FakeGuest guest, String cn, Path trusting, int channels) {
        return new MigrationSource(guest, List.of(), List.of(), MigrationSettings.DEFAULT.withChannels(channels))
                .withTransport(TlsTransport.load(certs.keystoreSettings(cn, trusting, "destination")));
    }

    @Test
    void aMigrationOverMutuallyAuthenticatedTlsCompletesOnEveryChannel() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 21); Destination dst = tlsDestination()) {
            MigrationStats stats = source(src, "source", ca, 3).migrate(dst.address());
            assertEquals(MigrationStatus.COMPLETED, stats.status());
            dst.started.get(30, TimeUnit.SECONDS);
            assertTrue(dst.guest.equalsSource(src));
            assertFalse(src.running());
        }
    }

    @Test
    void aPeerWhoseCertificateAnotherCaSignedIsRefusedBeforeAnythingChanges() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 22); Destination dst = tlsDestination()) {
            MigrationException e = assertThrows(MigrationException.class, () -> source(src, "stranger", otherCa, 1).migrate(dst.address()));
            assertTrue(e.getMessage().contains("nothing was changed") || e.getMessage().contains("migration failed in setup"), e.getMessage());
            assertTrue(src.running());
            assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS));
            assertTrue(dst.failures.getLast().contains("tls handshake"), dst.failures.getLast());
            assertEquals(0, dst.guest.starts());
            assertEquals(MigrationStatus.COMPLETED, source(src, "source", ca, 1).migrate(dst.address()).status(), "the next genuine migration");
        }
    }

    @Test
    void aPeerNotOnTheAuthorizationListIsRefusedNamingIt() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 23); Destination dst = tlsDestination()) {
            assertThrows(MigrationException.class, () -> source(src, "intruder", ca, 1).migrate(dst.address()));
            assertTrue(src.running());
            assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS));
            String why = dst.failures.getLast();
            assertTrue(why.contains("CN=intruder is not in migration.tls.authz"), why);
            assertEquals(0, dst.guest.starts());
        }
    }

    @Test
    void aSourceRefusesADestinationNotOnItsAuthorizationList() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 24); Destination dst = tlsDestination()) {
            MigrationSource wrongPeer = new MigrationSource(src, List.of(), List.of(), MigrationSettings.DEFAULT)
                    .withTransport(TlsTransport.load(certs.keystoreSettings("source", ca, "some-other-destination")));
            MigrationException e = assertThrows(MigrationException.class, () -> wrongPeer.migrate(dst.address()));
            assertTrue(e.getMessage().contains("CN=destination is not in migration.tls.authz"), e.getMessage());
            assertTrue(src.running());
            assertEquals(0, dst.guest.starts());
        }
    }

    @Test
    void aPlainSourceGetsNothingFromATlsDestination() throws Exception {
        try (FakeGuest src = FakeGuest.source(SIZE, 25); Destination dst = tlsDestination()) {
            MigrationSource plain = new MigrationSource(src, List.of(), List.of(), MigrationSettings.DEFAULT).withReadyTimeout(java.time.Duration.ofMillis(500));
            MigrationException e = assertThrows(MigrationException.class, () -> plain.migrate(dst.address()));
            assertTrue(e.getMessage().contains("did not answer READY within 500 ms"), e.getMessage());
            assertTrue(src.running());
            assertTrue(dst.attemptsEnded.tryAcquire(30, TimeUnit.SECONDS), "the destination gave the plain connection up");
            assertEquals(0, dst.guest.starts());
        }
    }

    @Test
    void missingKeyMaterialIsNamed() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> TlsTransport.load(new TlsTransport.Settings(dir.resolve("nope.pem"), dir.resolve("nope-key.pem"), null, null, ca, List.of())));
        assertTrue(e.getMessage().contains("nope") && e.getMessage().contains("no such file"), e.getMessage());
    }
}
