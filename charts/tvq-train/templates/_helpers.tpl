{{/*
Helpers of the tvq-train chart. The numbers here follow the run values contract that the
launcher (launcher/) implements in Python; keep the two in step.
*/}}

{{/* The JobSet name N: nameOverride, else the release name. Checked by "tvq-train.validate". */}}
{{- define "tvq-train.fullname" -}}
{{- default .Release.Name .Values.nameOverride -}}
{{- end -}}

{{/* Chips in one TPU slice: the product of the topology's dimensions. */}}
{{- define "tvq-train.tpuChips" -}}
{{- $chips := 1 -}}
{{- range splitList "x" .Values.tpu.topology -}}
{{- $chips = mul $chips (atoi .) -}}
{{- end -}}
{{- $chips -}}
{{- end -}}

{{/* TPU chips per host: v5e/v6e slices of up to 8 chips sit on one host; otherwise 4 per host. */}}
{{- define "tvq-train.tpuChipsPerHost" -}}
{{- $chips := include "tvq-train.tpuChips" . | atoi -}}
{{- if and (has .Values.tpu.version (list "v5e" "v6e")) (le $chips 8) -}}
{{- $chips -}}
{{- else -}}
4
{{- end -}}
{{- end -}}

{{/* Pods per Job (= per slice): topology chips / chips per host on tpu, else .Values.hosts. */}}
{{- define "tvq-train.hostsPerSlice" -}}
{{- if eq .Values.accelerator "tpu" -}}
{{- div (include "tvq-train.tpuChips" . | atoi) (include "tvq-train.tpuChipsPerHost" . | atoi) -}}
{{- else -}}
{{- .Values.hosts -}}
{{- end -}}
{{- end -}}

{{/* Jobs in the JobSet: one per TPU slice, else one. */}}
{{- define "tvq-train.slices" -}}
{{- if eq .Values.accelerator "tpu" -}}
{{- .Values.tpu.slices -}}
{{- else -}}
1
{{- end -}}
{{- end -}}

{{/* Checks that values.schema.json cannot express; each fails with one line. */}}
{{- define "tvq-train.validate" -}}
{{- $name := include "tvq-train.fullname" . -}}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $name) -}}
{{- fail (printf "name %q (nameOverride, else the release name): allowed: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit" $name) -}}
{{- end -}}
{{- $lastPod := printf "%s-workers-%d-%d" $name (sub (include "tvq-train.slices" . | atoi) 1) (sub (include "tvq-train.hostsPerSlice" . | atoi) 1) -}}
{{- if gt (len $lastPod) 63 -}}
{{- fail (printf "name %q (nameOverride, else the release name): %d characters; allowed: at most %d, so that the pod hostname %q fits in 63" $name (len $name) (sub 63 (sub (len $lastPod) (len $name))) $lastPod) -}}
{{- end -}}
{{- if and (eq .Values.accelerator "tpu") (ne (mod (include "tvq-train.tpuChips" . | atoi) (include "tvq-train.tpuChipsPerHost" . | atoi)) 0) -}}
{{- fail (printf "tpu.topology: got %q (%s chips); allowed for %s: a multiple of 4 chips" .Values.tpu.topology (include "tvq-train.tpuChips" .) .Values.tpu.version) -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object and pod: the app.kubernetes.io set, then commonLabels. */}}
{{- define "tvq-train.labels" -}}
{{- $own := dict
  "app.kubernetes.io/name" "tvq-train"
  "app.kubernetes.io/instance" (include "tvq-train.fullname" .)
  "app.kubernetes.io/managed-by" .Release.Service
  "app.kubernetes.io/version" .Values.image.tag
  "app.kubernetes.io/component" "trainer" -}}
{{- toYaml (merge $own .Values.commonLabels) -}}
{{- end -}}

{{/* The pods' ServiceAccount. */}}
{{- define "tvq-train.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tvq-train.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Node selectors: the accelerator's own, then .Values.nodeSelector over them. */}}
{{- define "tvq-train.nodeSelector" -}}
{{- $own := dict -}}
{{- if eq .Values.accelerator "tpu" -}}
{{- $accelerators := dict "v4" "tpu-v4-podslice" "v5e" "tpu-v5-lite-podslice" "v5p" "tpu-v5p-slice" "v6e" "tpu-v6e-slice" -}}
{{- $_ := set $own "cloud.google.com/gke-tpu-accelerator" (get $accelerators .Values.tpu.version) -}}
{{- $_ := set $own "cloud.google.com/gke-tpu-topology" .Values.tpu.topology -}}
{{- else if eq .Values.accelerator "gpu" -}}
{{- $_ := set $own "cloud.google.com/gke-accelerator" .Values.gpu.type -}}
{{- end -}}
{{- $all := mergeOverwrite $own .Values.nodeSelector -}}
{{- if $all -}}
{{- toYaml $all -}}
{{- end -}}
{{- end -}}

{{/* Resources: the accelerator's own, then .Values.resources merged over them. */}}
{{- define "tvq-train.resources" -}}
{{- $own := dict -}}
{{- if eq .Values.accelerator "tpu" -}}
{{- $chips := include "tvq-train.tpuChipsPerHost" . | atoi -}}
{{- $own = dict "requests" (dict "google.com/tpu" $chips) "limits" (dict "google.com/tpu" $chips) -}}
{{- else if eq .Values.accelerator "gpu" -}}
{{- $own = dict "limits" (dict "nvidia.com/gpu" .Values.gpu.perHost) -}}
{{- end -}}
{{- $all := mergeOverwrite $own .Values.resources -}}
{{- if $all -}}
{{- toYaml $all -}}
{{- end -}}
{{- end -}}

{{/* Tolerations: the accelerator's own, then .Values.tolerations. */}}
{{- define "tvq-train.tolerations" -}}
{{- $all := list -}}
{{- if eq .Values.accelerator "gpu" -}}
{{- $all = append $all (dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule") -}}
{{- end -}}
{{- $all = concat $all .Values.tolerations -}}
{{- if $all -}}
{{- toYaml $all -}}
{{- end -}}
{{- end -}}
