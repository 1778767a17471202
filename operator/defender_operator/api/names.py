"""Fixed names of the API (design.md "Names"): changing one is a breaking change for every user."""

GROUP = "defender-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "AWSConnector"
PLURAL = "awsconnectors"
SINGULAR = "awsconnector"
SHORT_NAMES = ("awsc",)
CATEGORIES = ("defender",)

FINALIZER = f"{GROUP}/finalizer"
ANNOTATION_PAUSED = f"{GROUP}/paused"
ANNOTATION_RECONCILE_REQUESTED_AT = f"{GROUP}/reconcile-requested-at"
ANNOTATION_ADOPT = f"{GROUP}/adopt"
# The operator's nudge: set on an object being deleted when a namespace of its name is made again after one finalized
# without it (handlers/tenancy.py: _touch_left_behind), so that Kopf sees an event of it and ends its cleanup.
ANNOTATION_TOUCHED = f"{GROUP}/touched-at"
# On a ClusterOnboardingPolicy: a deletion of it is a replacement (the chart's policies are Helm hooks, deleted and
# created again on every upgrade), so its grants outlive it for policy_grace_seconds unless it comes back
ANNOTATION_DELETION_GRACE = f"{GROUP}/deletion-grace"

POLICY_KIND = "ClusterOnboardingPolicy"
POLICY_PLURAL = "clusteronboardingpolicies"
EFFECTIVE_KIND = "EffectiveOnboardingPolicy"
EFFECTIVE_PLURAL = "effectiveonboardingpolicies"
EFFECTIVE_NAME = "effective"  # the one EffectiveOnboardingPolicy, the admission policy's parameter
RECORD_KIND = "OnboardingRecord"
RECORD_PLURAL = "onboardingrecords"  # cluster-scoped, one per AWSConnector, named by its uid (api/record.py)
SECRET_FINALIZER_PREFIX = (
    f"{GROUP}/in-use-by-"  # + the uid of the AWSConnector whose cleanup needs the Secret
)
