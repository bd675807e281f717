package org.vmmkit.core.vfio.user;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

import org.junit.jupiter.api.extension.ConditionEvaluationResult;
import org.junit.jupiter.api.extension.ExecutionCondition;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Marks a test that runs libvfio-user's sample server (built by {@link VfioUserPeer}). Without a buildable
 * peer the test is skipped with a loud line on stderr, unless {@code CI} is set or
 * {@code VMMKIT_REQUIRE_VFIO_USER=1}, where that is a failure.
 */
@Target({ElementType.TYPE, ElementType.METHOD})
@Retention(RetentionPolicy.RUNTIME)
@ExtendWith(RequiresVfioUser.Condition.class)
public @interface RequiresVfioUser {

    final class Condition implements ExecutionCondition {
        @Override
        public ConditionEvaluationResult evaluateExecutionCondition(ExtensionContext context) {
            String reason = VfioUserPeer.unavailableReason();
            if (reason == null) return ConditionEvaluationResult.enabled("the libvfio-user sample server is built");
            if (VfioUserPeer.required()) {
                throw new IllegalStateException((System.getenv("CI") != null ? "CI is set" : VfioUserPeer.REQUIRE_ENV + "=1")
                        + " but the libvfio-user peer is unusable: " + reason);
            }
            System.err.println("!!! SKIPPED (needs the libvfio-user peer): " + context.getDisplayName() + ": " + reason);
            return ConditionEvaluationResult.disabled("needs the libvfio-user peer: " + reason);
        }
    }
}
