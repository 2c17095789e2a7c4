//! The feature-set-dependent MachineConfigNode CRD, the ControllerConfig CRD, and how the real server
//! treats fields a schema does not declare: pruned with a warning by create/update/merge patch
//! (`05-mc-create-unknown-field*` in the golden corpus), 400 with `fieldValidation=Strict`, and a
//! failed server-side apply (a 500 from structured-merge-diff's typed conversion).

mod common;

use common::Http;
use kube_sim::{FeatureSet, KubeSim, SimOptions};
use serde_json::{Value, json};

const MCN_PATH: &str = "/apis/machineconfiguration.openshift.io/v1/machineconfignodes";
const APPLY: &str = "application/apply-patch+yaml";
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn sim(feature_set: FeatureSet) -> (KubeSim, Http) {
    let sim = KubeSim::start(SimOptions {
        feature_set,
        ..Default::default()
    })
    .await
    .unwrap();
    let http = Http::new(&sim.url());
    let mcn = json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigNode",
        "metadata": {"name": "node1"},
        "spec": {"node": {"name": "node1"}, "pool": {"name": "worker"}, "configVersion": {"desired": "rendered-worker-1"}}});
    let r = http.json("POST", MCN_PATH, "application/json", &mcn).await;
    assert_eq!(r.status, 201, "{}", r.json());
    (sim, http)
}

fn status_with_image(image: &str) -> Value {
    json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "MachineConfigNode",
        "metadata": {"name": "node1"},
        "status": {"observedGeneration": 1, "configVersion": {"desired": "rendered-worker-1"},
                   "configImage": {"desiredImage": image}}})
}

async fn apply_status(http: &Http, body: &Value) -> common::Resp {
    http.json(
        "PATCH",
        &format!("{MCN_PATH}/node1/status?fieldManager=machine-config-daemon&force=true"),
        APPLY,
        body,
    )
    .await
}

#[tokio::test]
async fn the_served_crd_is_the_feature_sets_variant() {
    for (fs, annotation, has_image) in [
        (FeatureSet::Default, "Default", false),
        (
            FeatureSet::TechPreviewNoUpgrade,
            "TechPreviewNoUpgrade",
            true,
        ),
    ] {
        let (_sim, http) = sim(fs).await;
        let r = http
            .get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/machineconfignodes.machineconfiguration.openshift.io")
            .await;
        assert_eq!(r.status, 200);
        let crd = r.json();
        assert_eq!(
            crd["metadata"]["annotations"]["release.openshift.io/feature-set"],
            annotation
        );
        let status =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert_eq!(
            status["properties"]["configImage"].is_object(),
            has_image,
            "{annotation}"
        );
        assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
        // The CRDs are listed too, and cannot be changed (the served types are fixed at start).
        let list = http
            .get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
            .await
            .json();
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["metadata"]["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"controllerconfigs.machineconfiguration.openshift.io"));
        let r = http
            .json(
                "PUT",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/machineconfignodes.machineconfiguration.openshift.io",
                "application/json",
                &crd,
            )
            .await;
        assert_eq!(r.status, 405);
    }
}

#[tokio::test]
async fn default_crd_rejects_an_apply_of_image_fields_and_prunes_them_elsewhere() {
    let (sim, http) = sim(FeatureSet::Default).await;
    let image = format!("quay.io/openshift/os@{DIGEST}");
    let r = apply_status(&http, &status_with_image(&image)).await;
    assert_eq!(r.status, 500, "{}", r.json());
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "failed to create typed patch object (/node1; machineconfiguration.openshift.io/v1, Kind=MachineConfigNode): .status.configImage: field not declared in schema",
            "code": 500})
    );
    let stored = sim
        .get_object(
            "machineconfiguration.openshift.io/v1",
            "MachineConfigNode",
            None,
            "node1",
        )
        .unwrap();
    assert!(stored.get("status").is_none(), "nothing was applied");

    // A merge patch of the same status is accepted, the field pruned, with a warning...
    let patch = json!({"status": {"observedGeneration": 1, "configVersion": {"desired": "rendered-worker-1"},
        "configImage": {"desiredImage": image}}});
    let r = http
        .json(
            "PATCH",
            &format!("{MCN_PATH}/node1/status"),
            "application/merge-patch+json",
            &patch,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("warning").as_deref(),
        Some(r#"299 - "unknown field \"status.configImage\"""#)
    );
    assert!(r.json()["status"].get("configImage").is_none());
    assert_eq!(
        r.json()["status"]["configVersion"]["desired"],
        "rendered-worker-1"
    );
    // ...and refused with fieldValidation=Strict.
    let r = http
        .json(
            "PATCH",
            &format!("{MCN_PATH}/node1/status?fieldValidation=Strict"),
            "application/merge-patch+json",
            &patch,
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .ends_with(r#"strict decoding error: unknown field "status.configImage""#)
    );
}

#[tokio::test]
async fn tech_preview_crd_takes_image_fields_and_checks_their_format() {
    let (_sim, http) = sim(FeatureSet::TechPreviewNoUpgrade).await;
    let good = format!(
        "image-registry.openshift-image-registry.svc:5000/openshift-machine-config-operator/os@{DIGEST}"
    );
    let r = apply_status(&http, &status_with_image(&good)).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["status"]["configImage"]["desiredImage"], good);
    let local = format!("127.0.0.1:5000/os@{DIGEST}");
    assert_eq!(
        apply_status(&http, &status_with_image(&local)).await.status,
        200
    );

    // The CEL rules of ImageDigestFormat: a digest, and host[:port][/namespace]/name.
    for (image, message) in [
        (
            "quay.io/openshift/os:latest".to_string(),
            "the OCI Image reference must end with a valid '@sha256:<digest>' suffix, where '<digest>' is 64 characters long",
        ),
        (
            format!("quay.io/openshift/os@{}", &DIGEST[..20]),
            "the OCI Image reference must end with a valid '@sha256:<digest>' suffix, where '<digest>' is 64 characters long",
        ),
        (
            format!("os@{DIGEST}"),
            "the OCI Image name should follow the host[:port][/namespace]/name format, resembling a valid URL without the scheme",
        ),
    ] {
        let r = apply_status(&http, &status_with_image(&image)).await;
        assert_eq!(r.status, 422, "{image}: {}", r.json());
        let causes = r.json()["details"]["causes"].clone();
        assert!(
            causes
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["field"] == "status.configImage.desiredImage"
                    && c["message"].as_str().unwrap().ends_with(message)),
            "{image}: {causes}"
        );
    }
    // minProperties: 1 on status.configImage is not something kube-sim needs here; an empty
    // desiredImage violates minLength.
    let r = apply_status(&http, &status_with_image("")).await;
    assert_eq!(r.status, 422);
}

fn controller_config(ca: &str) -> Value {
    json!({"apiVersion": "machineconfiguration.openshift.io/v1", "kind": "ControllerConfig",
        "metadata": {"name": "machine-config-controller"},
        "spec": {
            "additionalTrustBundle": null, "baseOSContainerImage": "quay.io/openshift/os@sha256:00",
            "cloudProviderCAData": null, "cloudProviderConfig": "", "clusterDNSIP": "172.30.0.10",
            "dns": {"spec": {"baseDomain": "example.com"}}, "images": {},
            "infra": {"spec": {}, "status": {}}, "ipFamilies": "IPv4",
            "kubeAPIServerServingCAData": ca, "network": null, "proxy": null,
            "releaseImage": "quay.io/openshift/release@sha256:00", "rootCAData": ca}})
}

#[tokio::test]
async fn controller_config_byte_fields_must_be_base64() {
    let sim = KubeSim::start(SimOptions::default()).await.unwrap();
    let http = Http::new(&sim.url());
    let path = "/apis/machineconfiguration.openshift.io/v1/controllerconfigs";
    let r = http
        .json(
            "POST",
            path,
            "application/json",
            &controller_config("LS0tLS1CRUdJTg=="),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let mut bad = controller_config("LS0tLS1CRUdJTg==");
    bad["metadata"]["name"] = json!("other");
    bad["spec"]["kubeAPIServerServingCAData"] = json!("not base64!");
    let r = http.json("POST", path, "application/json", &bad).await;
    assert_eq!(r.status, 422, "{}", r.json());
    assert_eq!(
        r.json()["details"]["causes"][0],
        json!({"reason": "FieldValueTypeInvalid", "field": "spec.kubeAPIServerServingCAData",
            "message": "Invalid value: \"not base64!\": spec.kubeAPIServerServingCAData in body must be of type byte: \"not base64!\""})
    );
}
