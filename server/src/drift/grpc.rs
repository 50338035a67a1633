//! Ferry's `ferry.drift.v1.DriftService` over gRPC: the same core calls as the REST drift routes
//! ([`crate::core::InferenceService::drift_report`], [`crate::core::InferenceService::change_drift_baseline`]),
//! acting for the caller the auth layer admitted, with the report as protobuf messages.

use ferry_proto::ferry::drift::v1::{
    self as pb, drift_baseline_request::Source, drift_service_server::DriftService,
};
use tonic::{Request, Response, Status};

use super::{BaselineSource, FeatureReport, Histogram, InputReport, VersionReport};
use crate::core::{BaselineChange, InferenceService};

/// The drift service over the core that serves every front end.
#[derive(Debug, Clone)]
pub struct DriftGrpc(pub InferenceService);

#[tonic::async_trait]
impl DriftService for DriftGrpc {
    async fn drift_report(
        &self,
        request: Request<pb::DriftReportRequest>,
    ) -> Result<Response<pb::DriftReportResponse>, Status> {
        let core = self.0.acting_for(request.extensions());
        let request = request.into_inner();
        let reports = core.drift_report(&request.model, &request.version)?;
        Ok(Response::new(pb::DriftReportResponse {
            model: request.model,
            versions: reports.into_iter().map(version).collect(),
        }))
    }

    async fn drift_baseline(
        &self,
        request: Request<pb::DriftBaselineRequest>,
    ) -> Result<Response<pb::DriftBaselineResponse>, Status> {
        let core = self.0.acting_for(request.extensions());
        let request = request.into_inner();
        let change = match request.source() {
            Source::Live => BaselineChange::FreezeLive,
            Source::File => BaselineChange::File,
        };
        let report = core.change_drift_baseline(&request.model, &request.version, change)?;
        Ok(Response::new(pb::DriftBaselineResponse {
            version: Some(version(report)),
        }))
    }
}

/// A version's report as its message.
fn version(report: VersionReport) -> pb::VersionDrift {
    pb::VersionDrift {
        model: report.model,
        version: report.version,
        sample_rate: report.sample_rate,
        window: report.window,
        psi_threshold: report.psi_threshold,
        ks_threshold: report.ks_threshold,
        samples: report.samples,
        samples_dropped: report.samples_dropped,
        samples_absorbed: report.samples_absorbed,
        alerts_raised: report.alerts_raised,
        alerts_cleared: report.alerts_cleared,
        baseline: report.baseline.map(|source| pb::BaselineSource {
            source: Some(match source {
                BaselineSource::File { name } => pb::baseline_source::Source::File(name),
                BaselineSource::Live {
                    frozen_at_unix_seconds,
                } => pb::baseline_source::Source::FrozenAtUnixSeconds(frozen_at_unix_seconds),
            }),
        }),
        inputs: report.inputs.into_iter().map(input).collect(),
    }
}

fn input(report: InputReport) -> pb::InputDrift {
    pb::InputDrift {
        name: report.name,
        datatype: report.datatype.to_owned(),
        tracked: report.tracked,
        features: report.features.into_iter().map(feature).collect(),
    }
}

fn feature(report: FeatureReport) -> pb::FeatureDrift {
    let Histogram {
        edges,
        expected,
        counts,
    } = report.histogram.unwrap_or(Histogram {
        edges: Vec::new(),
        expected: Vec::new(),
        counts: Vec::new(),
    });
    pb::FeatureDrift {
        feature: u32::try_from(report.feature).unwrap_or(u32::MAX),
        count: report.count,
        nan_count: report.nan_count,
        mean: report.mean,
        variance: report.variance,
        min: report.min,
        max: report.max,
        quantiles: report
            .quantiles
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect(),
        histogram_edges: edges,
        histogram_expected: expected,
        histogram_counts: counts,
        baseline: report.baseline.map(|b| pb::FeatureBaseline {
            count: b.count,
            mean: b.mean,
            variance: b.variance,
            min: b.min,
            max: b.max,
            nan_ratio: b.nan_ratio,
        }),
        psi: report.scores.psi,
        ks: report.scores.ks,
        out_of_range_ratio: report.scores.out_of_range_ratio,
        nan_ratio: report.scores.nan_ratio,
        drifting: report.drifting,
    }
}
