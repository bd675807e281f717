package org.vmmkit.core.kvm;

import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;

import org.junit.jupiter.api.extension.ConditionEvaluationResult;
import org.junit.jupiter.api.extension.ExecutionCondition;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * Marks a test that needs a usable {@code /dev/kvm}. Without one the test is skipped with a loud line
 * on stderr, unless {@code VMMKIT_REQUIRE_KVM=1} (CI on a KVM host), where a missing KVM is a failure.
 */
@Target({ElementType.TYPE, ElementType.METHOD})
@Retention(RetentionPolicy.RUNTIME)
@ExtendWith(RequiresKvm.Condition.class)
public @interface RequiresKvm {

    final class Condition implements ExecutionCondition {
        private static final String REASON = Kvm.unavailableReason();

        @Override
        public ConditionEvaluationResult evaluateExecutionCondition(ExtensionContext context) {
            if (REASON == null) return ConditionEvaluationResult.enabled("/dev/kvm is usable");
            String what = context.getDisplayName();
            if ("1".equals(System.getenv("VMMKIT_REQUIRE_KVM"))) {
                throw new IllegalStateException("VMMKIT_REQUIRE_KVM=1 but KVM is unusable: " + REASON);
            }
            System.err.println("!!! SKIPPED (needs KVM): " + what + ": " + REASON);
            return ConditionEvaluationResult.disabled("needs KVM: " + REASON);
        }
    }
}
